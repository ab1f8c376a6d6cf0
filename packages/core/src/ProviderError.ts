/**
 * The error every provider adapter fails with. The `reason` says what went
 * wrong in provider-neutral terms, so the pipeline can decide to retry, split
 * or stop without knowing the provider.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Schedule, Schema } from "effect"

/**
 * The network failed (reset, refused, timeout) before an HTTP answer.
 *
 * @since 0.1.0
 * @category errors
 */
export class Transport extends Schema.TaggedError<Transport>()("Transport", {
  message: Schema.String
}) {}

/**
 * HTTP 429: slow down. `retryAfterMs` comes from the provider's header when present.
 *
 * @since 0.1.0
 * @category errors
 */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  message: Schema.String,
  retryAfterMs: Schema.optional(Schema.Finite)
}) {}

/**
 * HTTP 5xx.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServerError extends Schema.TaggedError<ServerError>()("ServerError", {
  message: Schema.String,
  status: Schema.Int
}) {}

/**
 * HTTP 404 on a resource we created (batch, file): right after create it can be
 * propagation delay, later it means the resource is gone.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  message: Schema.String
}) {}

/**
 * Any other 4xx: the request itself is wrong (authentication, validation,
 * size). `status` 413 means the batch is too large and can be split.
 *
 * @since 0.1.0
 * @category errors
 */
export class Rejected extends Schema.TaggedError<Rejected>()("Rejected", {
  message: Schema.String,
  status: Schema.Int,
  code: Schema.optional(Schema.String)
}) {}

/**
 * The provider answered with something the adapter cannot read.
 *
 * @since 0.1.0
 * @category errors
 */
export class Protocol extends Schema.TaggedError<Protocol>()("Protocol", {
  message: Schema.String
}) {}

/**
 * The adapter does not support what was asked of it (for example a table job
 * on a provider that only takes files).
 *
 * @since 0.1.0
 * @category errors
 */
export class Unsupported extends Schema.TaggedError<Unsupported>()("Unsupported", {
  message: Schema.String
}) {}

/**
 * A provider call failed.
 *
 * @example
 * ```ts
 * effect.pipe(Effect.catchReason("ProviderError", "RateLimited", (r) => Effect.sleep(r.retryAfterMs ?? 1000)))
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ProviderError extends Schema.TaggedError<ProviderError>()("ProviderError", {
  provider: Schema.String,
  operation: Schema.String,
  reason: Schema.Union([Transport, RateLimited, ServerError, NotFound, Rejected, Protocol, Unsupported])
}) {
  override get message(): string {
    return `${this.provider} ${this.operation}: ${this.reason._tag}: ${this.reason.message}`
  }
}

/**
 * True when retrying the same call later can succeed.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (error: ProviderError): boolean => {
  switch (error.reason._tag) {
    case "Transport":
    case "RateLimited":
    case "ServerError":
      return true
    default:
      return false
  }
}

/**
 * What an adapter's error can be.
 *
 * @since 0.1.0
 * @category models
 */
export type Reason = ProviderError["reason"]

/** the longest error text kept from an answer's body */
const MESSAGE_CHARS = 500

/**
 * An error answer's text on one line: an HTML page (a proxy's or a wrong host's 404) by its text alone, whitespace and
 * line breaks collapsed, clipped to {@link MESSAGE_CHARS} characters.
 */
const oneLine = (text: string): string => {
  const html = /<(!doctype|html|head|body)\b/i.test(text)
  const plain = (html ? text.replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, " ").replace(/<[^>]*>/g, " ") : text)
    .replace(/\s+/g, " ")
    .trim()
  const clipped = plain.length > MESSAGE_CHARS ? `${plain.slice(0, MESSAGE_CHARS)}…` : plain
  return html ? `${clipped} (an HTML page: is the base URL right?)` : clipped
}

/**
 * The reason of an HTTP error answer: 429 `RateLimited`, 404 `NotFound`,
 * 5xx `ServerError`, other 4xx `Rejected` (with the provider's error code),
 * anything else `Protocol`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const reasonOfStatus = (
  status: number,
  body: string,
  extra: { readonly retryAfterMs?: number | undefined; readonly code?: string | null | undefined } = {}
): Reason => {
  const message = oneLine(body)
  if (status === 429) {
    return new RateLimited({ message, ...(extra.retryAfterMs !== undefined ? { retryAfterMs: extra.retryAfterMs } : {}) })
  }
  if (status === 404) return new NotFound({ message })
  if (status >= 500) return new ServerError({ message, status })
  if (status >= 400) {
    return new Rejected({ message, status, ...(typeof extra.code === "string" ? { code: extra.code } : {}) })
  }
  return new Protocol({ message })
}

/**
 * The reason of a failure with no HTTP answer. A connection that could not be made or broke (refused, reset, host not
 * found, timed out, a body cut off mid-stream) is `Transport`, its message naming the host and the cause found in the
 * error's `cause` chain — `cannot connect to 127.0.0.1:8080: connection refused (connect ECONNREFUSED 127.0.0.1:8080)`
 * rather than an SDK's bare "Connection error." (pass the SDK's error itself: its `cause` holds what happened);
 * anything else is `Protocol`.
 *
 * @example
 * ```ts
 * ProviderError.reasonOfFailure(sdkConnectionError).message
 * // "cannot connect to 127.0.0.1:8080: connection refused (connect ECONNREFUSED 127.0.0.1:8080)"
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const reasonOfFailure = (cause: unknown): Reason => {
  const message = cause instanceof Error ? cause.message : String(cause)
  const network = networkCause(cause)
  if (network !== undefined) return new Transport({ message: network })
  return /terminated|ECONNRESET|socket|network|fetch failed|aborted|connection error/i.test(message) ||
      isConnectionErrorName(cause)
    ? new Transport({ message })
    : new Protocol({ message })
}

/**
 * The reason of an error thrown by an official SDK client (`openai`, `@anthropic-ai/sdk`): an HTTP answer (its
 * `status`, `retry-after` headers and the provider's error code) goes through `reasonOfStatus`, a failure with no
 * answer through `reasonOfFailure`. One mapping for every adapter built on such a client.
 *
 * @example
 * ```ts
 * Effect.tryPromise({
 *   try: () => client.batches.retrieve(id),
 *   catch: (cause) => new ProviderError.ProviderError({ provider: "openai", operation: "status", reason: ProviderError.reasonOfSdkError(cause) })
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const reasonOfSdkError = (cause: unknown): Reason => {
  const e = cause as { status?: unknown; headers?: unknown; code?: unknown; errorCode?: unknown; type?: unknown } | null
  if (!(cause instanceof Error) || typeof e?.status !== "number" || isConnectionErrorName(cause)) return reasonOfFailure(cause)
  const code = [e.code, e.errorCode, e.type].find((c): c is string => typeof c === "string")
  return reasonOfStatus(e.status, cause.message, {
    retryAfterMs: retryAfterMs(e.headers instanceof Headers ? e.headers : undefined),
    code
  })
}

/** what a Node network error code means, in words */
const NETWORK_CODES: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ECONNABORTED: "connection aborted",
  EPIPE: "connection closed while sending",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed (temporary)",
  ETIMEDOUT: "timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EADDRNOTAVAIL: "address not available",
  UND_ERR_CONNECT_TIMEOUT: "timed out connecting",
  UND_ERR_SOCKET: "socket closed",
  UND_ERR_HEADERS_TIMEOUT: "timed out waiting for the answer's headers",
  UND_ERR_BODY_TIMEOUT: "timed out reading the answer",
  CERT_HAS_EXPIRED: "TLS certificate expired",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed TLS certificate",
  SELF_SIGNED_CERT_IN_CHAIN: "self-signed TLS certificate in the chain",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "TLS certificate cannot be verified",
  ERR_TLS_CERT_ALTNAME_INVALID: "TLS certificate does not match the host"
}

/** codes of a connection that could not be made */
const CONNECT_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "UND_ERR_CONNECT_TIMEOUT"
])

const isConnectionErrorName = (u: unknown): boolean =>
  u instanceof Error && /^APIConnection(Timeout)?Error$/.test(u.constructor.name)

/**
 * The first network error in `u`'s cause chain (through `cause` and an `AggregateError`'s `errors`), as
 * `cannot connect to <host:port>: <what> (<Node's message>)`; undefined when there is none.
 */
const networkCause = (u: unknown): string | undefined => {
  const seen = new Set<unknown>()
  const queue: Array<unknown> = [u]
  while (queue.length > 0) {
    const e = queue.shift()
    if (typeof e !== "object" || e === null || seen.has(e)) continue
    seen.add(e)
    const err = e as {
      readonly code?: unknown
      readonly message?: unknown
      readonly address?: unknown
      readonly port?: unknown
      readonly hostname?: unknown
      readonly host?: unknown
      readonly cause?: unknown
      readonly errors?: unknown
      readonly syscall?: unknown
    }
    const code = typeof err.code === "string" ? err.code : undefined
    const what = code === undefined ? undefined : NETWORK_CODES[code]
    if (what !== undefined) {
      const host = typeof err.address === "string"
        ? `${err.address}${typeof err.port === "number" || typeof err.port === "string" ? `:${err.port}` : ""}`
        : typeof err.hostname === "string"
        ? err.hostname
        : typeof err.host === "string"
        ? err.host
        : undefined
      const detail = typeof err.message === "string" && err.message.length > 0 ? ` (${err.message})` : ` (${code})`
      if (host === undefined) return `${what}${detail}`
      return CONNECT_CODES.has(code!) || err.syscall === "connect" || err.syscall === "getaddrinfo"
        ? `cannot connect to ${host}: ${what}${detail}`
        : `${host}: ${what}${detail}`
    }
    queue.push(err.cause)
    if (Array.isArray(err.errors)) queue.push(...err.errors)
  }
  return undefined
}

/**
 * The pause a 429 asks for, in milliseconds, from `retry-after-ms` or
 * `retry-after` (seconds); undefined when neither is there.
 *
 * @since 0.1.0
 * @category utilities
 */
export const retryAfterMs = (headers: Headers | undefined): number | undefined => {
  const ms = Number(headers?.get("retry-after-ms") ?? Number.NaN)
  if (Number.isFinite(ms) && ms >= 0) return ms
  const seconds = Number(headers?.get("retry-after") ?? Number.NaN)
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined
}

/**
 * Retries `effect` while the provider answers 404 for something created moments ago (a batch, a file: providers
 * propagate new resources with a delay), until `grace` has passed since `since` (epoch ms); polls quickly at first,
 * then every 5 seconds. Every adapter and the runner use this one policy.
 *
 * @example
 * ```ts
 * ProviderError.retryNotFound(client.retrieve(id), { since: submittedAt, grace: "2 minutes" })
 * ```
 *
 * @since 0.1.0
 * @category retrying
 */
export const retryNotFound = <A, R>(
  effect: Effect.Effect<A, ProviderError, R>,
  options: { readonly since: number; readonly grace: Duration.Input }
): Effect.Effect<A, ProviderError, R> => {
  const graceMs = Duration.toMillis(Duration.fromInputUnsafe(options.grace))
  return Effect.retry(effect, {
    while: (e) => e.reason._tag === "NotFound" && Date.now() - options.since < graceMs,
    schedule: Schedule.min([Schedule.exponential("100 millis", 2), Schedule.spaced("5 seconds")])
  })
}

