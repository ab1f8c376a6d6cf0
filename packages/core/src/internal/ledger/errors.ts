/**
 * The ledger's errors (re-exported by `Ledger.ts`; here so the ledger's internals import them without a cycle).
 *
 * @internal
 */
import { Schema } from "effect"

/**
 * Another live process holds the lease: it works a run of this pipeline now.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseHeld extends Schema.TaggedError<LeaseHeld>()("LeaseHeld", {
  scope: Schema.String,
  runId: Schema.String,
  host: Schema.String,
  pid: Schema.Int,
  acquiredAt: Schema.Finite,
  heartbeatAt: Schema.Finite,
  expiresAt: Schema.Finite,
  sameHost: Schema.Boolean
}) {
  override get message(): string {
    const at = (ms: number) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")
    const ago = Math.max(0, Math.round((Date.now() - this.heartbeatAt) / 1000))
    return `pipeline "${this.scope}" is being worked by run ${this.runId}: process ${this.pid} on ${this.host}, since ${
      at(this.acquiredAt)
    } (last heartbeat ${ago} s ago). Wait for it to end, or stop it (Ctrl-C detaches it; then \`offpeak resume ${this.runId}\`)` +
      (this.sameHost
        ? "."
        : `; if that machine is gone, its lease expires at ${at(this.expiresAt)} and a resume may take over then.`)
  }
}

/**
 * A ledger call failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class LedgerError extends Schema.TaggedError<LedgerError>()("LedgerError", {
  operation: Schema.String,
  message: Schema.String
}) {}
