/**
 * Over 400 lines on purpose: the schema of every answer of the view's API, which its tests decode with, in
 * one place.
 *
 * The web view's read model: what `/api/*` answers, built from the ledger alone (the view is a separate process; it
 * sees a run's progress by reading the ledger again). Each answer has a schema here, which the test decodes it with.
 *
 * Runs that no process works (completed, failed, cancelled, detached) do not change until they are resumed, so their
 * counts and spend are read once per (state, updated at) and kept; a run being worked is read again at most once per
 * `liveTtlMs`, however many pages poll it.
 *
 * @internal
 */
import { Effect, Option, Schema } from "effect"
import type * as Ledger from "../../Ledger.ts"
import * as Prices from "../../Prices.ts"
import type { FailureKind } from "../../Result.ts"

// ===== Schemas =====

/** an amount of money: exact picodollars (a decimal string) and as `$0.001234` */
export const Money = Schema.Struct({ picodollars: Schema.String, usd: Schema.String })
export type Money = typeof Money.Type

/** the failure kinds a row can end with (a record of every kind: a kind added to `FailureKind` must be added here) */
const KINDS: Readonly<Record<FailureKind, true>> = {
  invalid_input: true,
  provider_error: true,
  expired: true,
  cancelled: true,
  decode_error: true,
  truncated: true,
  budget_refused: true,
  lost: true,
  sink_refused: true
}

/** the failure kinds a row can end with */
export const FAILURE_KINDS = Object.keys(KINDS) as ReadonlyArray<FailureKind>

/** a run's counters, as `Ledger.counts` gives them */
export const Counts = Schema.Struct({
  items: Schema.Number,
  maxPosition: Schema.Number,
  delivered: Schema.Number,
  dead: Schema.Number,
  pendingItems: Schema.Number,
  requests: Schema.Number,
  queued: Schema.Number,
  batched: Schema.Number,
  succeeded: Schema.Number,
  failed: Schema.Number,
  batches: Schema.Number,
  openBatches: Schema.Number
})

/** one run, with its counters, tokens, cost and who works it */
export const RunView = Schema.Struct({
  id: Schema.String,
  pipeline: Schema.String,
  module: Schema.NullOr(Schema.String),
  provider: Schema.String,
  mode: Schema.Literals(["batch", "sync", "auto"]),
  state: Schema.Literals(["running", "detached", "completed", "failed", "cancelled"]),
  sourceDone: Schema.Boolean,
  createdAt: Schema.String,
  updatedAt: Schema.String,
  message: Schema.NullOr(Schema.String),
  cwd: Schema.NullOr(Schema.String),
  /** a process holds the run's lease and is alive (or on another host, its lease not expired) */
  live: Schema.Boolean,
  holder: Schema.NullOr(Schema.Struct({
    host: Schema.String,
    pid: Schema.Number,
    alive: Schema.NullOr(Schema.Boolean),
    heartbeatAt: Schema.Number,
    expiresAt: Schema.Number
  })),
  /** from creation to now while a live process works the run, else to when it was last seen (last update or heartbeat) */
  durationMs: Schema.Number,
  counts: Counts,
  tokens: Schema.Struct({ input: Schema.Number, output: Schema.Number, cachedInput: Schema.Number }),
  /** rows answered from the result cache, and rows that shared a request with another row */
  cachedRows: Schema.Number,
  dedupedRows: Schema.Number,
  /** null while nothing was priced, spent or reserved */
  cost: Schema.NullOr(Schema.Struct({
    spent: Money,
    syncEquivalent: Money,
    saved: Money,
    reserved: Money,
    budget: Schema.NullOr(Money),
    /** answers recorded with no price (their model has none) */
    unpriced: Schema.Number
  }))
})
export type RunView = typeof RunView.Type

/** `GET /api/info`: the ledger the view reads */
export const InfoResponse = Schema.Struct({
  ledger: Schema.String,
  /** what to add to `offpeak resume <run>` to reach this ledger ("" for the default one) */
  ledgerFlags: Schema.String
})
export type InfoResponse = typeof InfoResponse.Type

/** `GET /api/runs` */
export const RunsResponse = Schema.Struct({ now: Schema.Number, runs: Schema.Array(RunView) })
export type RunsResponse = typeof RunsResponse.Type

/** how many rows ended failed with a kind */
export const FailureCount = Schema.Struct({ kind: Schema.String, rows: Schema.Number })

/** `GET /api/runs/:id` */
export const RunResponse = Schema.Struct({
  now: Schema.Number,
  run: RunView,
  failures: Schema.Array(FailureCount)
})
export type RunResponse = typeof RunResponse.Type

/** a batch as the ledger has it, money as {@link Money} */
export const BatchView = Schema.Struct({
  id: Schema.String,
  seq: Schema.Number,
  state: Schema.Literals(["sealed", "submitting", "submitted", "ended", "collected"]),
  mode: Schema.Literals(["batch", "sync", "table"]),
  group: Schema.String,
  model: Schema.NullOr(Schema.String),
  requestCount: Schema.Number,
  bytes: Schema.Number,
  remoteId: Schema.NullOr(Schema.String),
  remoteState: Schema.NullOr(Schema.String),
  completed: Schema.Number,
  failed: Schema.Number,
  createdAt: Schema.String,
  submittedAt: Schema.NullOr(Schema.String),
  endedAt: Schema.NullOr(Schema.String),
  reserved: Money,
  worst: Schema.NullOr(Money)
})
export type BatchView = typeof BatchView.Type

/** `GET /api/runs/:id/batches` */
export const BatchesResponse = Schema.Struct({ now: Schema.Number, batches: Schema.Array(BatchView) })
export type BatchesResponse = typeof BatchesResponse.Type

/** a row that ended failed */
export const FailedRowView = Schema.Struct({
  key: Schema.String,
  position: Schema.Number,
  kind: Schema.String,
  message: Schema.String,
  /** the provider's raw answer or the row's text, cut to {@link RAW_LIMIT} characters */
  raw: Schema.NullOr(Schema.String),
  attempts: Schema.Number
})

/** `GET /api/runs/:id/failures/:kind`: one page */
export const FailuresResponse = Schema.Struct({
  kind: Schema.String,
  rows: Schema.Array(FailedRowView),
  /** pass as `after` for the next page; null on the last page */
  next: Schema.NullOr(Schema.Number)
})
export type FailuresResponse = typeof FailuresResponse.Type

const FailureView = Schema.Struct({ kind: Schema.String, message: Schema.String, raw: Schema.NullOr(Schema.String) })

/** the request as the run's pipeline renders it from the stored record, or why it could not be rendered */
export const Rendered = Schema.Union([
  Schema.Struct({
    ok: Schema.Literal(true),
    request: Schema.Unknown,
    fingerprint: Schema.String,
    /** false: the pipeline module changed since the row was sent (its request is not the one that was sent) */
    matches: Schema.Boolean
  }),
  Schema.Struct({ ok: Schema.Literal(false), error: Schema.String })
])
export type Rendered = typeof Rendered.Type

/** `GET /api/runs/:id/row?key=`: everything the ledger knows of one row */
export const RowResponse = Schema.Struct({
  runId: Schema.String,
  key: Schema.String,
  position: Schema.Number,
  /** the record (parsed JSON), null when it could not be read */
  record: Schema.Unknown,
  failure: Schema.NullOr(FailureView),
  request: Schema.NullOr(Schema.Struct({
    fingerprint: Schema.String,
    state: Schema.String,
    attempts: Schema.Number,
    cached: Schema.Boolean,
    batch: Schema.NullOr(Schema.Struct({
      id: Schema.String,
      remoteId: Schema.NullOr(Schema.String),
      state: Schema.String,
      mode: Schema.String
    })),
    failure: Schema.NullOr(FailureView),
    /** the answer: parsed JSON (chat), or null */
    answer: Schema.Unknown,
    /** an embedding answer (stored as float32): its size and first values */
    embedding: Schema.NullOr(Schema.Struct({ dimensions: Schema.Number, head: Schema.Array(Schema.Number) })),
    usage: Schema.NullOr(Schema.Struct({
      inputTokens: Schema.Number,
      outputTokens: Schema.Number,
      cachedInputTokens: Schema.optionalKey(Schema.Number)
    }))
  })),
  rendered: Schema.NullOr(Rendered)
})
export type RowResponse = typeof RowResponse.Type

// ===== Errors =====

/** an answer other than 200: the status and a message for the page */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  status: Schema.Number,
  message: Schema.String
}) {}

// ===== Building views =====

/** raw failure text kept in an answer (a provider's error body can be large) */
export const RAW_LIMIT = 4_000

const money = (amount: bigint): Money => ({ picodollars: amount.toString(), usd: Prices.formatUsd(amount, 6) })

const cut = (text: string | null | undefined): string | null =>
  text === null || text === undefined ? null : text.length <= RAW_LIMIT ? text : `${text.slice(0, RAW_LIMIT)}… (${text.length} characters)`

const parseJson = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** base64 little-endian float32 → its size and first values */
const embeddingOf = (base64: string) => {
  const bytes = Buffer.from(base64, "base64")
  const dimensions = Math.floor(bytes.length / 4)
  const head: Array<number> = []
  for (let i = 0; i < Math.min(8, dimensions); i++) head.push(Number(bytes.readFloatLE(i * 4).toFixed(6)))
  return { dimensions, head }
}

const TERMINAL = new Set(["completed", "failed", "cancelled", "detached"])

/** what renders a row's request from its stored record (see `render.ts`); null when it cannot be known */
export type RenderRequest = (run: Ledger.Run, record: string, fingerprint: string) => Effect.Effect<Rendered | null>

/**
 * The read model over a ledger: one value per server, shared by every request.
 */
export const make = (ledger: Ledger.Service, options: {
  /** the ledger's name for the page (a file path, or `Postgres`) */
  readonly label?: string | undefined
  readonly ledgerFlags?: string | undefined
  readonly liveTtlMs?: number | undefined
  readonly render?: RenderRequest | undefined
} = {}) => {
  const liveTtlMs = options.liveTtlMs ?? 750
  /** per run: the view's numbers, with the (state, updated at) they were read at and when */
  const cache = new Map<string, { readonly stamp: string; readonly at: number; readonly view: Omit<RunView, "live" | "holder" | "durationMs"> }>()

  const notFound = (runId: string) => new ApiError({ status: 404, message: `no run "${runId}" in the ledger` })

  const numbers = (run: Ledger.Run) =>
    Effect.gen(function*() {
      const stamp = `${run.state}\u0000${run.updatedAt}`
      const hit = cache.get(run.id)
      const now = Date.now()
      if (hit !== undefined && hit.stamp === stamp && (TERMINAL.has(run.state) || now - hit.at < liveTtlMs)) return hit.view
      const counts = yield* ledger.counts(run.id)
      const spend = yield* ledger.spend(run.id)
      const priced = spend.spent > 0n || spend.syncEquivalent > 0n || spend.reserved > 0n || spend.budget !== null
      const view = {
        id: run.id,
        pipeline: run.pipeline,
        module: run.module,
        provider: run.provider,
        mode: run.mode,
        state: run.state,
        sourceDone: run.sourceDone,
        createdAt: run.createdAt,
        updatedAt: run.updatedAt,
        message: run.message,
        cwd: run.cwd,
        counts,
        tokens: { input: spend.inputTokens, output: spend.outputTokens, cachedInput: spend.cachedInputTokens },
        cachedRows: spend.cachedRows,
        dedupedRows: spend.dedupedRows,
        cost: priced
          ? {
            spent: money(spend.spent),
            syncEquivalent: money(spend.syncEquivalent),
            saved: money(spend.syncEquivalent > spend.spent ? spend.syncEquivalent - spend.spent : 0n),
            reserved: money(spend.reserved),
            budget: spend.budget === null ? null : money(spend.budget),
            unpriced: spend.unpriced
          }
          : null
      }
      cache.set(run.id, { stamp, at: now, view })
      return view
    })

  /** the lease holders of the pipelines with a running run, read once per answer */
  const holders = (runs: ReadonlyArray<Ledger.Run>) =>
    Effect.gen(function*() {
      const out = new Map<string, Ledger.LeaseHolder>()
      for (const pipeline of new Set(runs.filter((r) => r.state === "running").map((r) => r.pipeline))) {
        const holder = yield* ledger.holder(pipeline)
        if (Option.isSome(holder)) out.set(pipeline, holder.value)
      }
      return out
    })

  const view = (run: Ledger.Run, holders: ReadonlyMap<string, Ledger.LeaseHolder>, now: number) =>
    Effect.map(numbers(run), (n): RunView => {
      const lease = holders.get(run.pipeline)
      const holder = lease !== undefined && lease.runId === run.id && run.state === "running" ? lease : undefined
      const live = holder !== undefined && holder.alive !== false && holder.expiresAt > now
      // a run no live process works stopped when it was last seen: its last update, or its holder's last heartbeat
      const end = live ? now : Math.max(Date.parse(run.updatedAt), holder?.heartbeatAt ?? 0)
      return {
        ...n,
        live,
        holder: holder === undefined
          ? null
          : {
            host: holder.host,
            pid: holder.pid,
            alive: holder.alive ?? null,
            heartbeatAt: holder.heartbeatAt,
            expiresAt: holder.expiresAt
          },
        durationMs: Math.max(0, end - Date.parse(run.createdAt))
      }
    })

  const getRun = (runId: string) =>
    Effect.flatMap(ledger.getRun(runId), (run) => Option.isNone(run) ? Effect.fail(notFound(runId)) : Effect.succeed(run.value))

  /** every run, newest first */
  const runs: Effect.Effect<RunsResponse, Ledger.LedgerError> = Effect.gen(function*() {
    const all = yield* ledger.listRuns
    const now = Date.now()
    const leases = yield* holders(all)
    const views: Array<RunView> = []
    for (const run of all) views.push(yield* view(run, leases, now))
    views.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id < b.id ? 1 : -1))
    return { now, runs: views }
  })

  /** one run, with its failures by kind */
  const run = (runId: string): Effect.Effect<RunResponse, Ledger.LedgerError | ApiError> =>
    Effect.gen(function*() {
      const found = yield* getRun(runId)
      const now = Date.now()
      const runView = yield* view(found, yield* holders([found]), now)
      const failures = yield* ledger.failureCounts(runId)
      return { now, run: runView, failures: failures.map((f) => ({ kind: f.kind, rows: f.rows })) }
    })

  /** a run's batches, in order */
  const batches = (runId: string): Effect.Effect<BatchesResponse, Ledger.LedgerError | ApiError> =>
    Effect.gen(function*() {
      yield* getRun(runId)
      const all = yield* ledger.batches(runId)
      return {
        now: Date.now(),
        batches: all.map((b): BatchView => ({
          id: b.id,
          seq: b.seq,
          state: b.state,
          mode: b.mode,
          group: b.group,
          model: b.model,
          requestCount: b.requestCount,
          bytes: b.bytes,
          remoteId: b.remoteId,
          remoteState: b.remoteState,
          completed: b.completed,
          failed: b.failed,
          createdAt: b.createdAt,
          submittedAt: b.submittedAt,
          endedAt: b.endedAt,
          reserved: money(b.reserved),
          worst: b.worst === null ? null : money(b.worst)
        })).sort((a, b) => a.seq - b.seq)
      }
    })

  /** a page of the rows that ended failed with `kind` (`all`: every kind), in source order after position `after` */
  const failures = (
    runId: string,
    kind: string,
    page: { readonly after: number; readonly limit: number }
  ): Effect.Effect<FailuresResponse, Ledger.LedgerError | ApiError> =>
    Effect.gen(function*() {
      if (kind !== "all" && !(FAILURE_KINDS as ReadonlyArray<string>).includes(kind)) {
        return yield* new ApiError({ status: 400, message: `no failure kind "${kind}": one of all, ${FAILURE_KINDS.join(", ")}` })
      }
      yield* getRun(runId)
      const rows = yield* ledger.failures(runId, {
        kind: kind === "all" ? undefined : kind as FailureKind,
        after: page.after,
        limit: page.limit + 1
      })
      const shown = rows.slice(0, page.limit)
      return {
        kind,
        rows: shown.map((r) => ({
          key: r.key,
          position: r.position,
          kind: r.kind,
          message: r.message,
          raw: cut(r.raw),
          attempts: r.attempts
        })),
        next: rows.length > page.limit ? shown.at(-1)!.position : null
      }
    })

  /** one row: its record, failure, request, answer, and the request as the pipeline renders it */
  const row = (runId: string, key: string): Effect.Effect<RowResponse, Ledger.LedgerError | ApiError> =>
    Effect.gen(function*() {
      const found = yield* getRun(runId)
      const detail = yield* ledger.inspect(runId, key)
      if (Option.isNone(detail)) return yield* new ApiError({ status: 404, message: `no row with key "${key}" in run ${runId}` })
      const d = detail.value
      const failureView = (f: Ledger.Failure | null) => f === null ? null : { kind: f.kind, message: f.message, raw: cut(f.raw) }
      const r = d.request
      const rendered = r === null || d.record === null || options.render === undefined
        ? null
        : yield* options.render(found, d.record, r.fingerprint)
      return {
        runId,
        key: d.key,
        position: d.position,
        record: parseJson(d.record),
        failure: failureView(d.failure),
        request: r === null ? null : {
          fingerprint: r.fingerprint,
          state: r.state,
          attempts: r.attempts,
          cached: r.cached,
          batch: r.batch,
          failure: failureView(r.failure),
          answer: r.output === null || r.format === "f32" ? null : parseJson(r.output),
          embedding: r.output !== null && r.format === "f32" ? embeddingOf(r.output) : null,
          usage: r.usage === null
            ? null
            : {
              inputTokens: r.usage.inputTokens,
              outputTokens: r.usage.outputTokens,
              ...(r.usage.cachedInputTokens === undefined ? {} : { cachedInputTokens: r.usage.cachedInputTokens })
            }
        },
        rendered
      }
    })

  const info: InfoResponse = { ledger: options.label ?? "ledger", ledgerFlags: options.ledgerFlags ?? "" }

  return { info, runs, run, batches, failures, row }
}

/** the read model's operations */
export type Api = ReturnType<typeof make>
