#!/usr/bin/env bash
# moto's EC2 server for the AWS provider tests (test/fakes/moto.ts runs `/usr/bin/python3 -m moto.server`).
# Debian 12 has no moto package; Debian 13's python3-moto (architecture all) installs on Debian 12 with bookworm's
# dependencies. Its .deb is fetched from the trixie suite of the mirror this machine's apt already uses, through a
# throw-away apt state directory, so the machine's own sources and package lists are left as they are.
set -euo pipefail
if /usr/bin/python3 -c 'import moto.server, moto.ec2' 2>/dev/null; then
  echo "moto: $(/usr/bin/python3 -c 'import moto; print(moto.__version__)') already installed" >&2
  exit 0
fi
apt_install python3 python3-antlr4 python3-boto3 python3-botocore python3-cryptography python3-dateutil \
  python3-flask python3-flask-cors python3-jinja2 python3-requests python3-responses python3-werkzeug \
  python3-xmltodict python3-yaml
if [ -n "${SPUFF_SKIP_APT:-}" ]; then
  echo "moto: not installed and SPUFF_SKIP_APT is set; the AWS provider tests will be skipped" >&2
  exit 0
fi

# The Debian mirror this machine uses (deb822 .sources or one-line sources.list), never a hard-coded host.
mirror=$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
  } | grep -v -- '-security' | grep -E '/debian/?$' | head -n 1 || true
)
if [ -z "$mirror" ]; then
  echo "moto: no Debian mirror found in /etc/apt/sources.list{,.d}" >&2
  exit 1
fi

d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/parts"
printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
  >"$d/parts/trixie.sources"
o=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$d/parts" -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache")
apt-get "${o[@]}" -qq update
(cd "$d" && apt-get "${o[@]}" -qq download python3-moto)
dpkg -i "$d"/python3-moto_*.deb >/dev/null
/usr/bin/python3 -c 'import moto.server, moto.ec2'
echo "moto: installed $(/usr/bin/python3 -c 'import moto; print(moto.__version__)') from trixie" >&2
