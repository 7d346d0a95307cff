# spuff runs this on a VM over SSH (it is not installed there) before `spuff down` destroys a VM without a workspace
# volume: one line per git work tree under the login user's home, for the question "destroy it anyway?".
# Output: "repo<TAB>PATH<TAB>CHANGED<TAB>UNPUSHED<TAB>STASHES" (PATH relative to $HOME; counts of uncommitted paths,
# commits on local branches that no remote has, stash entries), then "end". The VM is untrusted: spuff parses this
# strictly and only shows it.
cd "$HOME" 2>/dev/null || { echo end; exit 0; }
command -v git >/dev/null 2>&1 || { echo end; exit 0; }
find . -maxdepth 5 \( -name node_modules -o -name .cache -o -name .local \) -prune -o -name .git -print 2>/dev/null |
  head -n 200 |
  while IFS= read -r g; do
    d=${g%/.git}
    git -C "$d" rev-parse --is-inside-work-tree >/dev/null 2>&1 || continue
    changed=$(git -C "$d" status --porcelain 2>/dev/null | wc -l)
    unpushed=$(git -C "$d" log --branches --not --remotes --oneline 2>/dev/null | wc -l)
    stashes=$(git -C "$d" stash list 2>/dev/null | wc -l)
    printf 'repo\t%s\t%s\t%s\t%s\n' "${d#./}" "$changed" "$unpushed" "$stashes"
  done
echo end
