import { ProviderError, SpuffError, UserError } from "../../src/core/errors.js";
import { DEBIAN_RELEASE } from "./requests.js";

/**
 * One mapping from what the AWS SDK throws (EC2 error codes, credential-chain errors, transport errors) to spuff's
 * errors with a hint. A `UserError` (exit 1) is something the user fixes in their AWS setup or spuff config; a
 * `ProviderError` (exit 2) is EC2 failing or refusing for reasons of its own (capacity, quotas, outages).
 */

export const DOCS = "docs/providers/aws.md";

export interface ErrorContext {
  region?: string;
  profile?: string;
  endpoint?: string;
  instanceType?: string;
  availabilityZone?: string;
  /** Other availability zones that offer the instance type, for capacity hints. */
  otherZones?: string[];
  ami?: string;
  spot?: boolean;
}

interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
}

function asSdk(err: unknown): SdkError {
  return err && typeof err === "object" ? (err as SdkError) : { message: String(err) };
}

/** The EC2 error code (`InvalidAMIID.NotFound`), or the error's name for SDK-side errors. */
export function codeOf(err: unknown): string {
  const e = asSdk(err);
  return e.Code ?? e.name ?? "";
}

export function statusOf(err: unknown): number | undefined {
  return asSdk(err).$metadata?.httpStatusCode;
}

const NETWORK_CODES = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED", "EAI_AGAIN", "ENOTFOUND", "ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "socket hang up"]);
const TRANSIENT_CODES = new Set(["InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout", "RequestTimeoutException", "TimeoutError"]);
const THROTTLE_CODES = new Set(["RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"]);

function isNetwork(err: unknown): boolean {
  const e = asSdk(err);
  return NETWORK_CODES.has(e.code ?? "") || (e.name === "TimeoutError" && e.$metadata === undefined) || /socket hang up/i.test(e.message ?? "");
}

/**
 * A create call that failed this way may or may not have happened at EC2 (the request may have arrived and only the
 * answer was lost): look it up before sending it again. Throttling is safe to retry too (nothing happened).
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof SpuffError) return false;
  const code = codeOf(err);
  if (THROTTLE_CODES.has(code) || TRANSIENT_CODES.has(code)) return true;
  if (isNetwork(err)) return asSdk(err).code !== "ECONNREFUSED" && asSdk(err).code !== "ENOTFOUND";
  const status = statusOf(err);
  // A 5xx without one of EC2's definite codes (capacity errors are 5xx too but mean "not created").
  return status !== undefined && status >= 500 && !/^Insufficient|Unsupported|LimitExceeded/.test(code);
}

const CREDENTIALS_HINT = [
  "configure credentials the way the AWS CLI reads them: `aws configure` (access keys), or `aws configure sso` then `aws sso login`",
  "pick a profile with aws.profile in your spuff config or AWS_PROFILE; or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
];

/** The message of an SDK error, without anything that could be a secret (EC2 never echoes keys; trim to one line). */
function said(err: unknown): string {
  const e = asSdk(err);
  const code = codeOf(err);
  const msg = (e.message ?? "").split("\n")[0].replace(/Encoded authorization failure message: \S+/, "(encoded authorization message omitted)").trim();
  return code && !msg.startsWith(code) ? `${code}: ${msg}` : msg;
}

/** Turns any error from an EC2 call (`action`, e.g. "RunInstances") into a spuff error with a hint. */
export function explain(err: unknown, action: string, ctx: ErrorContext = {}): SpuffError {
  if (err instanceof SpuffError) return err;
  const e = asSdk(err);
  const code = codeOf(err);
  const msg = e.message ?? "";
  const where = ctx.region ? ` in ${ctx.region}` : "";
  const profile = ctx.profile ? ` (profile ${ctx.profile})` : "";

  // Before any request: the region and the credential chain.
  const badRegion = /Region not accepted: region="([^"]*)"/i.exec(msg);
  if (badRegion?.[1]) {
    return new UserError(`"${badRegion[1]}" is not an AWS region`, {
      hint: "set aws.region (or AWS_REGION) to a region code such as eu-central-1 or us-east-1",
      cause: err,
    });
  }
  // An empty AWS_REGION reaches the SDK as region "": the same as none.
  if (/Region is missing/i.test(msg) || code === "MissingRegion" || badRegion) {
    return new UserError("no AWS region is configured", {
      hint: ["set aws.region in your spuff config, or export AWS_REGION (e.g. eu-central-1)", "or give your AWS profile a region: `aws configure set region eu-central-1`"],
      cause: err,
    });
  }
  if (code === "CredentialsProviderError" || code === "TokenProviderError" || /Could not load credentials|Could not resolve credentials/i.test(msg)) {
    if (/SSO|token/i.test(msg) && /expired|refresh/i.test(msg)) {
      return new UserError(`the AWS SSO session${profile} has expired`, { hint: `run \`aws sso login${ctx.profile ? ` --profile ${ctx.profile}` : ""}\``, cause: err });
    }
    if (ctx.profile) {
      // The SDK's own message ("Could not load credentials from any providers") does not say which profile it tried.
      return new UserError(`the AWS profile "${ctx.profile}" has no usable credentials`, {
        hint: [
          `check ~/.aws/config and ~/.aws/credentials for [profile ${ctx.profile}] / [${ctx.profile}]: keys, an SSO session (\`aws sso login --profile ${ctx.profile}\`), a role or credential_process`,
          "or set aws.profile / AWS_PROFILE to a profile that exists",
        ],
        cause: err,
      });
    }
    return new UserError("no AWS credentials found", { hint: CREDENTIALS_HINT, cause: err });
  }
  if (code === "ExpiredToken" || code === "ExpiredTokenException" || code === "RequestExpired" || /security token included in the request is expired/i.test(msg)) {
    return new UserError(`the AWS credentials${profile} have expired (${said(err)})`, {
      hint: [
        ctx.profile ? `refresh them: \`aws sso login --profile ${ctx.profile}\` (SSO) or get a new session token` : "refresh them: `aws sso login` (SSO), or export a new AWS_SESSION_TOKEN with its keys",
        "if they are fresh, check this machine's clock (EC2 rejects requests more than 5 minutes off)",
      ],
      cause: err,
    });
  }
  if (["AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "IncompleteSignature", "InvalidAccessKeyId"].includes(code)) {
    return new UserError(`AWS rejected the credentials${profile} (${said(err)})`, { hint: CREDENTIALS_HINT, cause: err });
  }
  if (code === "UnauthorizedOperation" || code === "AccessDenied" || code === "AccessDeniedException") {
    return new UserError(`your AWS identity is not allowed to call ec2:${action}${where} (${said(err)})`, {
      hint: [`add "ec2:${action}" to the IAM policy of your user or role; ${DOCS} lists the minimal policy spuff needs`, "`aws sts decode-authorization-message --encoded-message ...` explains a denial in detail"],
      cause: err,
    });
  }
  if (code === "OptInRequired" || code === "PendingVerification" || code === "Blocked") {
    return new UserError(`the AWS account cannot use EC2${where} yet (${said(err)})`, {
      hint: ctx.region ? `enable the region ${ctx.region} for your account, or use another one with aws.region` : "finish the account's verification, or pick another region",
      cause: err,
    });
  }

  // Placement, image and type problems the user fixes with --size/--location or the config.
  if (code.startsWith("InvalidAMIID")) {
    return new UserError(`the AMI ${ctx.ami ?? ""} cannot be used${where} (${said(err)})`.replace("AMI  ", "AMI "), {
      hint: ["AMIs are per region: look the image up in this region, e.g. `aws ec2 describe-images --image-ids ami-...`", `or remove aws.ami to use the latest official ${DEBIAN_RELEASE} image`],
      cause: err,
    });
  }
  if (code === "InvalidInstanceType" || (code === "InvalidParameterValue" && /instance ?type/i.test(msg))) {
    return new UserError(`unknown EC2 instance type "${ctx.instanceType ?? "?"}"${where} (${said(err)})`, {
      hint: "pass an existing type with --size or aws.instance_type, e.g. t3.small, t3.medium (x86_64) or t4g.small (arm64); `aws ec2 describe-instance-types` lists them",
      cause: err,
    });
  }
  if (code === "Unsupported" && ctx.instanceType) {
    return new UserError(`EC2 does not offer ${ctx.instanceType} in ${ctx.availabilityZone ?? "this availability zone"} (${said(err)})`, {
      hint: ctx.otherZones?.length ? `try --location ${ctx.otherZones[0]} (offered in ${ctx.otherZones.join(", ")})` : "try another instance type with --size",
      cause: err,
    });
  }
  if (code === "InvalidSubnetID.NotFound" || code === "InvalidSubnetID.Malformed") {
    return new UserError(`the subnet in aws.subnet_id does not exist${where} (${said(err)})`, {
      hint: "subnets are per region and VPC: `aws ec2 describe-subnets` lists yours; or remove aws.subnet_id to use the default VPC",
      cause: err,
    });
  }

  // EC2 cannot do it right now.
  if (code === "InsufficientInstanceCapacity" || code === "InsufficientHostCapacity" || code === "InsufficientCapacity") {
    const zone = ctx.availabilityZone ? ` in ${ctx.availabilityZone}` : where;
    return new ProviderError(`AWS has no ${ctx.spot ? "spot " : ""}capacity for ${ctx.instanceType ?? "this instance type"}${zone} right now (${said(err)})`, {
      hint: [
        ctx.otherZones?.length ? `try another availability zone: --location ${ctx.otherZones[0]} (${ctx.instanceType} is offered in ${ctx.otherZones.join(", ")})` : "try another availability zone with --location",
        `or another instance type with --size${ctx.spot ? ", or on-demand (aws.spot: false)" : ""}, or again in a few minutes`,
      ],
      cause: err,
    });
  }
  if (code === "VcpuLimitExceeded" || code === "InstanceLimitExceeded" || code === "MaxSpotInstanceCountExceeded") {
    return new ProviderError(`your AWS account's ${ctx.spot ? "spot " : ""}vCPU quota${where} does not allow another ${ctx.instanceType ?? "instance"} (${said(err)})`, {
      hint: [
        "terminate instances you no longer need (`spuff ls`), or pick a smaller type with --size",
        `or request a higher quota: Service Quotas → Amazon EC2 → "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"${ctx.spot ? ' / "All Standard ... Spot Instance Requests"' : ""}`,
      ],
      cause: err,
    });
  }
  if (code === "SpotMaxPriceTooLow" || code === "InsufficientFreeAddressesInSubnet") {
    return new ProviderError(`EC2 refused the launch (${said(err)})`, {
      hint: code === "SpotMaxPriceTooLow" ? "use on-demand (aws.spot: false) or another instance type" : "free addresses in the subnet, or use another one with aws.subnet_id",
      cause: err,
    });
  }
  if (THROTTLE_CODES.has(code)) {
    return new ProviderError(`EC2 is throttling requests${where} (${said(err)})`, { hint: "wait a minute and run it again", cause: err });
  }
  if (isNetwork(err)) {
    return new ProviderError(`cannot reach the EC2 API${ctx.endpoint ? ` at ${ctx.endpoint}` : where} (${e.code ?? e.name}: ${msg.split("\n")[0]})`, {
      hint: ctx.endpoint ? "check aws.endpoint / AWS_ENDPOINT_URL_EC2, or unset it to use AWS" : "check your network connection and proxy settings",
      cause: err,
    });
  }
  const status = statusOf(err);
  return new ProviderError(`EC2 ${action} failed${where}: ${said(err) || "unknown error"}${status ? ` (HTTP ${status})` : ""}`, {
    hint: "run again with --verbose for details",
    cause: err,
  });
}
