/**
 * What happened to one input row: `Succeeded` with its decoded output, or
 * `Failed` with a kind and a reason. Every row of a run ends in exactly one of
 * these; `Succeeded` goes to the sink, `Failed` to the dead-letter sink.
 *
 * @since 0.1.0
 */

/**
 * Why a row failed.
 *
 * - `invalid_input`: the row did not decode with the source schema, or the
 *   request could not be built or encoded (too large for any batch, …)
 * - `provider_error`: the provider answered the line with an error
 * - `expired`: the batch window closed before the line ran
 * - `cancelled`: the batch was cancelled before the line ran
 * - `decode_error`: the model's answer did not decode with the output schema
 * - `truncated`: the answer stopped at the token limit or a content filter
 * - `budget_refused`: the budget cap refused to submit the request
 * - `lost`: the provider reported the batch done but returned no line for it
 * - `sink_refused`: the sink refused the row's value (a NUL byte, an over-long
 *   string, a type error); the rest of its part was delivered
 *
 * @since 0.1.0
 * @category models
 */
export type FailureKind =
  | "invalid_input"
  | "provider_error"
  | "expired"
  | "cancelled"
  | "decode_error"
  | "truncated"
  | "budget_refused"
  | "lost"
  | "sink_refused"

/**
 * Token usage of one request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly cachedInputTokens?: number | undefined
}

/**
 * A row whose request succeeded and whose output decoded.
 *
 * @since 0.1.0
 * @category models
 */
export interface Succeeded<R, A> {
  readonly _tag: "Succeeded"
  readonly key: string
  readonly record: R
  readonly output: A
  readonly usage: Usage
  /** true when the output came from the result cache or another row's identical request */
  readonly cached: boolean
}

/**
 * A row that ended without an output. `record` is absent when the row itself
 * could not be read; `raw` keeps the source text or the model's answer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failed<R> {
  readonly _tag: "Failed"
  readonly key: string
  readonly record: R | undefined
  readonly kind: FailureKind
  readonly message: string
  readonly raw?: string | undefined
  /** 1-based position of the row in its source */
  readonly position: number
}

/**
 * Either outcome.
 *
 * @since 0.1.0
 * @category models
 */
export type Result<R, A> = Succeeded<R, A> | Failed<R>

/**
 * Usage of zero tokens.
 *
 * @since 0.1.0
 * @category constants
 */
export const emptyUsage: Usage = { inputTokens: 0, outputTokens: 0 }
