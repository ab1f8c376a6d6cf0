/**
 * How many synchronous provider calls run at once, adapting to the provider's
 * rate limits (additive increase, multiplicative decrease): the limit halves
 * when the provider answers that it is overloaded (HTTP 429, or Anthropic's
 * 529), and every new call waits out its `retry-after`; after as many
 * successful answers in a row as the current limit, it grows by one, up to
 * `max`. Adapters wrap the fetch of their SDK client with {@link fetch}, so
 * every answer counts, the SDK's own retries included.
 *
 * @since 0.1.0
 */
import { Effect, Semaphore } from "effect"

/**
 * An adaptive concurrency limit.
 *
 * @since 0.1.0
 * @category models
 */
export interface AdaptiveLimit {
  /** the most calls at once */
  readonly max: number
  /** the calls allowed at once now */
  readonly current: () => number
  /** runs `effect` once a slot is free and no `retry-after` is pending */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** the provider said it is overloaded: halve the limit (once per second at most) and pause new calls `retryAfterMs` */
  readonly overloaded: (retryAfterMs?: number | undefined) => void
  /** a call was answered: after `current()` in a row, one slot more */
  readonly succeeded: () => void
  /** `inner` (default: the global fetch) reporting every answer to this limit */
  readonly fetch: (inner?: typeof globalThis.fetch) => typeof globalThis.fetch
}

/** status codes that mean "slow down" */
const OVERLOADED = new Set([429, 529])
/** the longest pause a `retry-after` imposes */
const MAX_PAUSE_MS = 60_000
/** decreases closer together than this count as one (a burst of 429s answers calls started together) */
const DECREASE_EVERY_MS = 1_000

/**
 * The pause a response asks for, in milliseconds: `retry-after-ms`, or
 * `retry-after` in seconds or as an HTTP date.
 *
 * @since 0.1.0
 * @category utils
 */
export const retryAfterMs = (headers: Headers, now = Date.now()): number | undefined => {
  const ms = Number(headers.get("retry-after-ms") ?? Number.NaN)
  if (Number.isFinite(ms) && ms >= 0) return ms
  const value = headers.get("retry-after")
  if (value === null) return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/**
 * A limit of `max` calls at once, starting at `max`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly max: number }): AdaptiveLimit => {
  const max = Math.max(1, Math.floor(options.max))
  const semaphore = Semaphore.makeUnsafe(max)
  let current = max
  let streak = 0
  let pausedUntil = 0
  let lastDecrease = 0
  const resize = (n: number) => {
    current = n
    streak = 0
    Effect.runSync(Semaphore.resize(semaphore, n))
  }
  const overloaded = (retryAfter?: number | undefined) => {
    const now = Date.now()
    if (retryAfter !== undefined) pausedUntil = Math.max(pausedUntil, now + Math.min(retryAfter, MAX_PAUSE_MS))
    streak = 0
    if (now - lastDecrease < DECREASE_EVERY_MS) return
    lastDecrease = now
    if (current > 1) resize(Math.max(1, Math.floor(current / 2)))
  }
  const succeeded = () => {
    if (current >= max) return
    streak++
    if (streak >= current) resize(current + 1)
  }
  // a slot is taken first, then any pause is waited out: calls already waiting for a slot see a pause that began later
  const waitPause = Effect.suspend(() => {
    const wait = pausedUntil - Date.now()
    return wait > 0 ? Effect.sleep(wait) : Effect.void
  })
  return {
    max,
    current: () => current,
    withPermit: (effect) => Semaphore.withPermits(semaphore, 1)(Effect.andThen(waitPause, effect)),
    overloaded,
    succeeded,
    fetch: (inner = globalThis.fetch) => async (input, init) => {
      const response = await inner(input, init)
      if (OVERLOADED.has(response.status)) overloaded(retryAfterMs(response.headers))
      else if (response.ok) succeeded()
      return response
    }
  }
}
