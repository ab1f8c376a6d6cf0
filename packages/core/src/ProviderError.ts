/**
 * The error every provider adapter fails with. The `reason` says what went
 * wrong in provider-neutral terms, so the pipeline can decide to retry, split
 * or stop without knowing the provider.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

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
