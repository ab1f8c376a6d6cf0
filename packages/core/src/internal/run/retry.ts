/**
 * How the runner waits out a provider's bad moments: transient errors (unreachable, 429, 5xx) retried for a horizon
 * with a capped, jittered back-off that honours `retry-after`, each wait reported as a `BackingOff` event (and a
 * provider that cannot be reached at all as `ProviderUnreachable`, naming the host and the cause); and what a
 * provider's refusals mean for a batch (too large: split; over the enqueued-token limit: split, later).
 *
 * @internal
 */
import { Duration, Effect, Schedule } from "effect"
import type * as Provider from "../../Provider.ts"
import * as ProviderError from "../../ProviderError.ts"
import type * as RunEvent from "../../RunEvent.ts"

/**
 * Back-off doubling from half a second to a minute, jittered, never shorter than the provider's `retry-after`, for
 * `horizon` in all. A batch has 24 hours: a rate-limit storm or an outage of a few hours must not fail it.
 */
export const transientSchedule = (
  horizon: Duration.Duration,
  emit: (event: RunEvent.RunEvent) => void,
  /** whether a failure is tried again (the retry's own condition): no "next attempt" is announced for one that is not */
  again: (error: ProviderError.ProviderError) => boolean = () => true,
  /** the latest time (epoch ms) a failure's next attempt may be made, if any: the wait is shortened to it */
  lastAttemptBy: (error: ProviderError.ProviderError) => number | undefined = () => undefined
) =>
  Schedule.min([Schedule.exponential("500 millis", 2), Schedule.spaced("1 minute")]).pipe(
    Schedule.jittered,
    Schedule.setInputType<ProviderError.ProviderError>(),
    Schedule.modifyDelay(({ duration, input }) =>
      Effect.sync(() => {
        const wanted = input.reason._tag === "RateLimited" && input.reason.retryAfterMs !== undefined
          ? Duration.max(duration, Duration.millis(input.reason.retryAfterMs))
          : duration
        const by = lastAttemptBy(input)
        const delay = by === undefined ? wanted : Duration.min(wanted, Duration.millis(Math.max(0, by - Date.now())))
        const delayMs = Duration.toMillis(delay)
        if (!again(input)) return delay
        if (input.reason._tag === "Transport") {
          // said at the first failure, not after minutes of silence: which host, why, and when the next try is
          emit({
            _tag: "ProviderUnreachable",
            provider: input.provider,
            operation: input.operation,
            message: input.reason.message,
            delayMs,
            nextAttemptAt: Date.now() + delayMs
          })
        }
        emit({
          _tag: "BackingOff",
          operation: `${input.provider} ${input.operation}`,
          reason: `${input.reason._tag}: ${input.reason.message}`,
          delayMs
        })
        return delay
      })
    ),
    Schedule.upTo({ duration: horizon })
  )

/** the error of a call that stayed transient past the horizon says so (and keeps its reason) */
export const gaveUp = (horizon: Duration.Duration) => (error: ProviderError.ProviderError): ProviderError.ProviderError => {
  const message = `${error.reason.message} (still failing after ${Duration.format(horizon)} of retries, ` +
    `retry.transientFor: resume the run once the provider answers again)`
  const r = error.reason
  const reason = r._tag === "Transport"
    ? new ProviderError.Transport({ message })
    : r._tag === "RateLimited"
    ? new ProviderError.RateLimited({ message, ...(r.retryAfterMs !== undefined ? { retryAfterMs: r.retryAfterMs } : {}) })
    : r._tag === "ServerError"
    ? new ProviderError.ServerError({ message, status: r.status })
    : undefined
  return reason === undefined
    ? error
    : new ProviderError.ProviderError({ provider: error.provider, operation: error.operation, reason })
}

/**
 * How long a connection that cannot be made is tried again before the provider first answered this process: the
 * waits are shortened so the last attempt is made at this mark, and the run stops right after it.
 */
export const FIRST_CONTACT = Duration.seconds(30)

/** the error of a provider that never answered this process in `elapsedMs`: most often a wrong base URL or host */
export const neverAnswered = (error: ProviderError.ProviderError, elapsedMs: number): ProviderError.ProviderError =>
  new ProviderError.ProviderError({
    provider: error.provider,
    operation: error.operation,
    reason: new ProviderError.Transport({
      message: `${error.reason.message} (nothing answered in ${Duration.format(Duration.seconds(Math.round(elapsedMs / 1000)))} ` +
        `since this process started: check the provider's base URL and the network, then resume the run)`
    })
  })

/** a provider may answer 404 for a batch it created moments ago (propagation): retried for this long */
export const NOT_FOUND_GRACE = "2 minutes"

/** the provider refused a batch for its size: splitting it can help */
export const isTooLarge = (error: ProviderError.ProviderError): boolean =>
  error.reason._tag === "Rejected" &&
  (error.reason.status === 413 ||
    /too large|too big|exceed|maximum size|request_too_large/i.test(`${error.reason.message} ${error.reason.code ?? ""}`))

/** a batch failed because too many tokens are queued at the provider */
export const isTokenLimit = (issue: Provider.Issue): boolean =>
  issue.code === "token_limit_exceeded" || /enqueued token limit/i.test(issue.message)

/** the first issues of a failed batch, for a message */
export const summaryOf = (issues: ReadonlyArray<Provider.Issue>): string =>
  issues.slice(0, 3).map((i) => `${i.code}: ${i.message}`).join("; ") || "no reason given"
