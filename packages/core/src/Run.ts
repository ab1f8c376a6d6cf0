/**
 * A run: one execution of a pipeline, from its first row read to its last row delivered, however many processes it
 * takes (a resume continues the same run). Its state, how it sends its requests, and the error that stops it.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/**
 * Where a run stands: `running` (a process works it), `detached` (Ctrl-C: its batches keep running at the provider),
 * `completed` (every row delivered), `failed` (stopped with a reason; resumable), `cancelled`.
 *
 * @since 0.1.0
 * @category models
 */
export type State = "running" | "detached" | "completed" | "failed" | "cancelled"

/**
 * How a run sends its requests: `batch` (the provider's batch API), `sync` (the synchronous API, one call per
 * request), or `auto` (batches of fewer than the pipeline's `syncBelow` requests go synchronously, the rest as
 * batches).
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "batch" | "sync" | "auto"

/**
 * The run could not go on (the source cannot be read, a sink is unavailable, the provider keeps failing, another
 * process owns the run). The ledger keeps everything done so far: resume the run once the cause is fixed.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunError extends Schema.TaggedError<RunError>()("RunError", {
  runId: Schema.String,
  message: Schema.String
}) {}
