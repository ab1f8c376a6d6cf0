/**
 * The shapes of every command's `--json` output, as Effect Schemas: the commands encode through them (so what they
 * print has the shape by construction) and tests decode what the CLI printed with them.
 *
 * @internal
 */
import { Schema } from "effect"

const Int = Schema.Int
const Time = Schema.String

/** a run's state */
export const RunState = Schema.Literals(["running", "detached", "completed", "failed", "cancelled"])

/** a failure kind (see `Result.FailureKind`) */
export const FailureKind = Schema.Literals([
  "invalid_input",
  "provider_error",
  "expired",
  "cancelled",
  "decode_error",
  "truncated",
  "budget_refused",
  "lost",
  "sink_refused"
])

/** the ledger's counters of a run */
export const Counts = Schema.Struct({
  items: Int,
  maxPosition: Int,
  delivered: Int,
  dead: Int,
  pendingItems: Int,
  requests: Int,
  queued: Int,
  batched: Int,
  succeeded: Int,
  failed: Int,
  batches: Int,
  openBatches: Int
})

/** tokens of the answers a run paid for */
export const Tokens = Schema.Struct({
  inputTokens: Int,
  outputTokens: Int,
  cachedInputTokens: Int
})

/** what a run spent, reserved and would have spent synchronously, in USD */
export const Cost = Schema.Struct({
  spentUsd: Schema.Finite,
  syncEquivalentUsd: Schema.Finite,
  reservedUsd: Schema.Finite,
  budgetUsd: Schema.NullOr(Schema.Finite),
  /** answers recorded with no price */
  unpricedAnswers: Int
})

/** the process working a run now */
export const Holder = Schema.Struct({
  host: Schema.String,
  pid: Int,
  acquiredAt: Time,
  heartbeatAt: Time,
  expiresAt: Time,
  /** false: its process is gone (same host); null: on another host */
  alive: Schema.NullOr(Schema.Boolean)
})

/** one run, as `status` lists it */
export const Run = Schema.Struct({
  id: Schema.String,
  pipeline: Schema.String,
  module: Schema.NullOr(Schema.String),
  provider: Schema.String,
  mode: Schema.Literals(["batch", "sync", "auto"]),
  state: RunState,
  message: Schema.NullOr(Schema.String),
  sourceDone: Schema.Boolean,
  createdAt: Time,
  updatedAt: Time,
  /** from creation to its last update (to now while it runs) */
  elapsedMs: Int,
  cwd: Schema.NullOr(Schema.String),
  checkpoint: Schema.NullOr(Schema.String),
  checkpointPosition: Schema.NullOr(Int),
  counts: Counts,
  tokens: Tokens,
  cost: Cost,
  holder: Schema.NullOr(Holder)
})

/** `offpeak status --json` */
export const StatusList = Schema.Array(Run)

/** one batch of a run */
export const Batch = Schema.Struct({
  id: Schema.String,
  seq: Int,
  state: Schema.Literals(["sealed", "submitting", "submitted", "ended", "collected"]),
  mode: Schema.Literals(["batch", "sync", "table"]),
  model: Schema.NullOr(Schema.String),
  requestCount: Int,
  bytes: Int,
  remoteId: Schema.NullOr(Schema.String),
  remoteState: Schema.NullOr(Schema.String),
  completed: Int,
  failed: Int,
  createdAt: Time,
  submittedAt: Schema.NullOr(Time),
  endedAt: Schema.NullOr(Time)
})

/** rows that ended failed, by kind */
export const KindCount = Schema.Struct({ kind: FailureKind, rows: Int })

/** `offpeak status <run> --json` */
export const StatusRun = Schema.Struct({
  run: Run,
  counts: Counts,
  failures: Schema.Array(KindCount),
  batches: Schema.Array(Batch)
})

/** a row that ended failed */
export const FailedRow = Schema.Struct({
  key: Schema.String,
  position: Int,
  kind: FailureKind,
  message: Schema.String,
  raw: Schema.NullOr(Schema.String),
  attempts: Int
})

/**
 * `offpeak failures <run> --json`: the counts by kind, and rows — examples of each kind, or (with `--kind`) that
 * kind's rows in source order, `next` the `--after` of the next page (null on the last)
 */
export const Failures = Schema.Struct({
  runId: Schema.String,
  kind: Schema.NullOr(FailureKind),
  counts: Schema.Array(KindCount),
  rows: Schema.Array(FailedRow),
  next: Schema.NullOr(Int)
})

const Failure = Schema.Struct({
  kind: FailureKind,
  message: Schema.String,
  raw: Schema.NullOr(Schema.String)
})

/** `offpeak inspect <run> <key> --json` */
export const Inspect = Schema.Struct({
  runId: Schema.String,
  key: Schema.String,
  position: Int,
  /** the record as the source gave it (JSON), null when it could not be read */
  record: Schema.Unknown,
  /** a failure on admission, or the sink's refusal */
  failure: Schema.NullOr(Failure),
  request: Schema.NullOr(Schema.Struct({
    fingerprint: Schema.String,
    state: Schema.String,
    attempts: Int,
    cached: Schema.Boolean,
    /** the request as the pipeline module renders it now (null when the module could not be loaded) */
    body: Schema.Unknown,
    /** true when `body` renders to the fingerprint that was sent (the module did not change it) */
    bodyMatches: Schema.NullOr(Schema.Boolean),
    batch: Schema.NullOr(Schema.Struct({
      id: Schema.String,
      remoteId: Schema.NullOr(Schema.String),
      state: Schema.String,
      mode: Schema.String
    })),
    failure: Schema.NullOr(Failure),
    /** the answer (JSON), or for an embedding its vector */
    output: Schema.Unknown,
    usage: Schema.NullOr(Schema.Struct({
      inputTokens: Int,
      outputTokens: Int,
      cachedInputTokens: Schema.NullOr(Int)
    }))
  }))
})

/** `offpeak run|resume|cancel --json`: the run's summary */
export const Summary = Schema.Struct({
  runId: Schema.String,
  state: RunState,
  message: Schema.NullOr(Schema.String),
  durationMs: Int,
  rows: Int,
  succeeded: Int,
  failed: Int,
  pending: Int,
  failedByKind: Schema.Array(KindCount),
  cachedRows: Int,
  dedupedRows: Int,
  batches: Int,
  tokens: Tokens,
  cost: Schema.Struct({
    spentUsd: Schema.Finite,
    syncEquivalentUsd: Schema.Finite,
    budgetUsd: Schema.NullOr(Schema.Finite),
    unpriced: Schema.Array(Schema.String)
  }),
  results: Schema.String,
  deadLetter: Schema.String,
  /** the command that resumes the run (null once nothing is left to do) */
  resume: Schema.NullOr(Schema.String),
  /** `--max-dead` was given and the run passed it */
  maxDeadExceeded: Schema.Boolean
})

/** `offpeak emulator <provider> --json`: the emulator's base URL, once it serves */
export const Emulator = Schema.Struct({
  provider: Schema.String,
  url: Schema.String
})

/** prints `value` encoded with `schema` as indented JSON */
export const render = <S extends Schema.Codec<any, any, never, never>>(schema: S, value: S["Type"]): string =>
  JSON.stringify(Schema.encodeSync(schema)(value), null, 2)
