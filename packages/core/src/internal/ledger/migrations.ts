/**
 * The ledger's schema migrations, in order: each entry is the change from the
 * one before. Migrations are history: a released entry is never edited.
 *
 * @internal
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

const toNumber = (u: unknown): number => typeof u === "bigint" ? Number(u) : Number(u ?? 0)

/** @internal */
export const migrations = {
  "0001_ledger": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE offpeak_runs (
      id TEXT PRIMARY KEY,
      pipeline TEXT NOT NULL,
      module TEXT,
      provider TEXT NOT NULL,
      state TEXT NOT NULL,
      source_done INTEGER NOT NULL DEFAULT 0,
      message TEXT,
      checkpoint TEXT,
      checkpoint_position INTEGER,
      created_at TEXT NOT NULL,
      updated_at TEXT NOT NULL
    )`
    yield* sql`CREATE TABLE offpeak_items (
      run_id TEXT NOT NULL,
      key TEXT NOT NULL,
      position INTEGER NOT NULL,
      fingerprint TEXT,
      record TEXT,
      state TEXT NOT NULL,
      part INTEGER,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run_id, key)
    )`
    // partial indexes: each hot query names the state it looks for, so the planner never scans a whole run
    yield* sql`CREATE INDEX offpeak_items_fingerprint ON offpeak_items (run_id, fingerprint)`
    yield* sql`CREATE INDEX offpeak_items_pending ON offpeak_items (run_id, position) WHERE state = 'pending'`
    yield* sql`CREATE INDEX offpeak_items_part ON offpeak_items (run_id, part) WHERE part IS NOT NULL`
    yield* sql`CREATE TABLE offpeak_requests (
      run_id TEXT NOT NULL,
      fingerprint TEXT NOT NULL,
      state TEXT NOT NULL,
      batch_id TEXT,
      attempts INTEGER NOT NULL DEFAULT 0,
      cached INTEGER NOT NULL DEFAULT 0,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run_id, fingerprint)
    )`
    yield* sql`CREATE INDEX offpeak_requests_queued ON offpeak_requests (run_id, fingerprint) WHERE state = 'queued'`
    yield* sql`CREATE INDEX offpeak_requests_batched ON offpeak_requests (batch_id, fingerprint) WHERE state = 'batched'`
    yield* sql`CREATE TABLE offpeak_batches (
      id TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      seq INTEGER NOT NULL,
      state TEXT NOT NULL,
      grp TEXT NOT NULL,
      file TEXT NOT NULL,
      request_count INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      remote_id TEXT,
      remote_meta TEXT,
      remote_state TEXT,
      completed INTEGER NOT NULL DEFAULT 0,
      failed INTEGER NOT NULL DEFAULT 0,
      created_at TEXT NOT NULL,
      submitted_at TEXT,
      ended_at TEXT
    )`
    yield* sql`CREATE UNIQUE INDEX offpeak_batches_seq ON offpeak_batches (run_id, seq)`
    yield* sql`CREATE TABLE offpeak_parts (
      run_id TEXT NOT NULL,
      seq INTEGER NOT NULL,
      state TEXT NOT NULL,
      PRIMARY KEY (run_id, seq)
    )`
    yield* sql`CREATE TABLE offpeak_results (
      fingerprint TEXT PRIMARY KEY,
      output TEXT NOT NULL,
      output_format TEXT NOT NULL DEFAULT 'json',
      input_tokens INTEGER NOT NULL,
      output_tokens INTEGER NOT NULL,
      cached_input_tokens INTEGER,
      created_at TEXT NOT NULL
    )`
  }),
  // Per-row tables keyed by (run number, position) and (run number, request number), so that rows are written in
  // the order they are read and a million-row run touches pages in sequence; one random-keyed index remains
  // (requests by a 48-bit fingerprint prefix). Runs recorded by 0001 are not carried over (no release used it).
  "0002_sequential": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const table of ["offpeak_items", "offpeak_requests", "offpeak_results", "offpeak_parts"]) {
      yield* sql`DROP TABLE IF EXISTS ${sql(table)}`
    }
    yield* sql`DELETE FROM offpeak_batches`
    yield* sql`DELETE FROM offpeak_runs`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN num BIGINT`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN item_count BIGINT NOT NULL DEFAULT 0`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN request_count BIGINT NOT NULL DEFAULT 0`
    yield* sql`CREATE UNIQUE INDEX offpeak_runs_num ON offpeak_runs (num)`
    // one row per input row; `request` is the number of its request (null when the row failed on admission);
    // `ready` once that request is settled; `part` once the row is assigned to a sink part
    yield* sql`CREATE TABLE offpeak_items (
      run BIGINT NOT NULL,
      position BIGINT NOT NULL,
      key TEXT NOT NULL,
      request BIGINT,
      ready INTEGER NOT NULL,
      part BIGINT,
      record TEXT,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run, position)
    )`
    yield* sql`CREATE UNIQUE INDEX offpeak_items_key ON offpeak_items (run, key)`
    // partial indexes hold only the rows in flight, so they stay small whatever the run's size
    yield* sql`CREATE INDEX offpeak_items_waiting ON offpeak_items (run, request) WHERE ready = 0`
    yield* sql`CREATE INDEX offpeak_items_deliverable ON offpeak_items (run, position) WHERE ready = 1 AND part IS NULL`
    yield* sql`CREATE INDEX offpeak_items_part ON offpeak_items (run, part, position) WHERE part IS NOT NULL`
    // one row per distinct request of a run, numbered by the position of the first row that asked for it
    yield* sql`CREATE TABLE offpeak_requests (
      run BIGINT NOT NULL,
      id BIGINT NOT NULL,
      fingerprint TEXT NOT NULL,
      fp48 BIGINT NOT NULL,
      state TEXT NOT NULL,
      batch BIGINT,
      attempts INTEGER NOT NULL DEFAULT 0,
      cached INTEGER NOT NULL DEFAULT 0,
      error_kind TEXT,
      error_message TEXT,
      error_raw TEXT,
      PRIMARY KEY (run, id)
    )`
    // in-run dedupe and the result cache across runs look requests up by fingerprint (the one random-keyed index)
    yield* sql`CREATE INDEX offpeak_requests_fp ON offpeak_requests (fp48, run)`
    yield* sql`CREATE INDEX offpeak_requests_queued ON offpeak_requests (run, id) WHERE state = 'queued'`
    yield* sql`CREATE INDEX offpeak_requests_batched ON offpeak_requests (run, batch, id) WHERE state = 'batched'`
    yield* sql`CREATE INDEX offpeak_requests_failed ON offpeak_requests (run, id) WHERE state = 'failed'`
    // the output of each succeeded request
    yield* sql`CREATE TABLE offpeak_outputs (
      run BIGINT NOT NULL,
      id BIGINT NOT NULL,
      output TEXT NOT NULL,
      output_format TEXT NOT NULL,
      input_tokens BIGINT NOT NULL,
      output_tokens BIGINT NOT NULL,
      cached_input_tokens BIGINT,
      PRIMARY KEY (run, id)
    )`
    yield* sql`CREATE TABLE offpeak_parts (
      run_id TEXT NOT NULL,
      seq BIGINT NOT NULL,
      state TEXT NOT NULL,
      delivered BIGINT NOT NULL DEFAULT 0,
      dead BIGINT NOT NULL DEFAULT 0,
      PRIMARY KEY (run_id, seq)
    )`
  }),
  // Settling a request writes nothing to its rows: a request's rows go to the sinks with it, in parts that are
  // ranges of a collected batch's settled requests; only rows that are deliverable on their own (failed on
  // admission, or whose answer was known when they were admitted) are marked (`own`) and assigned part by part.
  "0003_batch_parts": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE offpeak_items ADD COLUMN own INTEGER NOT NULL DEFAULT 0`
    // rows already settled go out on their own
    yield* sql`UPDATE offpeak_items SET own = 1 WHERE ready = 1 OR part IS NOT NULL`
    yield* sql`DROP INDEX offpeak_items_waiting`
    yield* sql`DROP INDEX offpeak_items_deliverable`
    yield* sql`ALTER TABLE offpeak_items DROP COLUMN ready`
    yield* sql`CREATE INDEX offpeak_items_request ON offpeak_items (run, request)`
    yield* sql`CREATE INDEX offpeak_items_own ON offpeak_items (run, position) WHERE own = 1 AND part IS NULL`
    // a request's batch stays once it is settled there: the batch's parts are ranges of its settled requests
    yield* sql`DROP INDEX offpeak_requests_batched`
    yield* sql`CREATE INDEX offpeak_requests_batch ON offpeak_requests (run, batch, id) WHERE batch IS NOT NULL`
    yield* sql`ALTER TABLE offpeak_parts ADD COLUMN batch BIGINT`
    yield* sql`ALTER TABLE offpeak_parts ADD COLUMN lo BIGINT`
    yield* sql`ALTER TABLE offpeak_parts ADD COLUMN hi BIGINT`
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0`
    // batches collected before this migration settled their rows one by one (now marked own)
    yield* sql`UPDATE offpeak_batches SET delivered = 1 WHERE state = 'collected'`
  }),
  // A request settled for good gets the next numbers of its run (`settled`), and parts are ranges of those numbers:
  // rows go out as soon as their requests settle, while the rest of their batch is still being recorded; outputs are
  // keyed by that number, so each transaction appends them instead of scattering them over the table.
  "0004_settled": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE offpeak_requests ADD COLUMN settled BIGINT`
    // a part being written as a range of a batch (0003) becomes a part of its own rows
    const writing = yield* sql<{ num: number | bigint; seq: number | bigint; batch: number | bigint; lo: number | bigint; hi: number | bigint }>`
      SELECT ru.num AS num, p.seq AS seq, p.batch AS batch, p.lo AS lo, p.hi AS hi
      FROM offpeak_parts p JOIN offpeak_runs ru ON ru.id = p.run_id
      WHERE p.batch IS NOT NULL AND p.state = 'writing'`
    for (const p of writing) {
      yield* sql`UPDATE offpeak_items SET own = 1, part = ${toNumber(p.seq)}
        WHERE run = ${toNumber(p.num)} AND own = 0 AND request IN (
          SELECT id FROM offpeak_requests WHERE run = ${toNumber(p.num)} AND batch = ${toNumber(p.batch)}
            AND id >= ${toNumber(p.lo)} AND id <= ${toNumber(p.hi)} AND state IN ('succeeded', 'failed'))`
    }
    // rows of settled requests that no committed range delivered go out on their own
    yield* sql`UPDATE offpeak_items SET own = 1 WHERE own = 0 AND part IS NULL AND EXISTS (
      SELECT 1 FROM offpeak_requests r
      WHERE r.run = offpeak_items.run AND r.id = offpeak_items.request AND r.state IN ('succeeded', 'failed')
        AND NOT EXISTS (SELECT 1 FROM offpeak_parts p JOIN offpeak_runs ru ON ru.id = p.run_id
          WHERE ru.num = r.run AND p.batch = r.batch AND r.id >= p.lo AND r.id <= p.hi AND p.state = 'committed'))`
    yield* sql`UPDATE offpeak_parts SET lo = NULL, hi = NULL`
    yield* sql`ALTER TABLE offpeak_parts DROP COLUMN batch`
    yield* sql`ALTER TABLE offpeak_batches DROP COLUMN delivered`
    // requests settled before: numbers below any new one (which start at 1), so no new range covers them
    yield* sql`UPDATE offpeak_requests SET settled = -1 - id WHERE state IN ('succeeded', 'failed')`
    // how many rows go out with each request, so a part is cut from the index alone
    yield* sql`ALTER TABLE offpeak_requests ADD COLUMN row_count BIGINT NOT NULL DEFAULT 0`
    yield* sql`UPDATE offpeak_requests SET row_count = (SELECT COUNT(*) FROM offpeak_items i
      WHERE i.run = offpeak_requests.run AND i.request = offpeak_requests.id AND i.own = 0)`
    yield* sql`CREATE INDEX offpeak_requests_settled ON offpeak_requests (run, settled, row_count) WHERE settled IS NOT NULL`
    yield* sql`CREATE TABLE offpeak_settled_outputs (
      run BIGINT NOT NULL,
      settled BIGINT NOT NULL,
      output TEXT NOT NULL,
      output_format TEXT NOT NULL,
      input_tokens BIGINT NOT NULL,
      output_tokens BIGINT NOT NULL,
      cached_input_tokens BIGINT,
      PRIMARY KEY (run, settled)
    )`
    yield* sql`INSERT INTO offpeak_settled_outputs
      SELECT o.run, r.settled, o.output, o.output_format, o.input_tokens, o.output_tokens, o.cached_input_tokens
      FROM offpeak_outputs o JOIN offpeak_requests r ON r.run = o.run AND r.id = o.id`
    yield* sql`DROP TABLE offpeak_outputs`
    yield* sql`ALTER TABLE offpeak_settled_outputs RENAME TO offpeak_outputs`
  }),
  "0005_mode": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // how a run sends its batches (batch, sync or auto), and how each batch was sent (batch or sync)
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'batch'`
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN mode TEXT NOT NULL DEFAULT 'batch'`
  }),
  // One owner per pipeline at a time (a lease with a generation that fences every write); a remote batch is held by
  // one batch of a run at most; what a run reads of a checkpointed source (its snapshot bounds) and where it was
  // started from (relative paths of a resumed run resolve the same way)
  "0006_ownership": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE offpeak_leases (
      scope TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      owner TEXT,
      host TEXT NOT NULL,
      pid BIGINT NOT NULL,
      pid_start TEXT,
      generation BIGINT NOT NULL,
      acquired_at BIGINT NOT NULL,
      heartbeat_at BIGINT NOT NULL,
      expires_at BIGINT NOT NULL
    )`
    yield* sql`CREATE UNIQUE INDEX offpeak_batches_remote ON offpeak_batches (run_id, remote_id) WHERE remote_id IS NOT NULL`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN snapshot_low TEXT`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN snapshot_high TEXT`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN cwd TEXT`
    // a table job (pushdown): its staged tables
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN spec TEXT`
    // money: the model a batch's requests ask, the worst case of its requests (input + max output at the batch's
    // price) and what is reserved of the budget for it until it is collected; each answer's cost and what it would
    // have cost synchronously (picodollars); a run's budget
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN model TEXT`
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN worst BIGINT`
    yield* sql`ALTER TABLE offpeak_batches ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0`
    yield* sql`ALTER TABLE offpeak_outputs ADD COLUMN cost BIGINT`
    yield* sql`ALTER TABLE offpeak_outputs ADD COLUMN sync_cost BIGINT`
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN budget BIGINT`
    // the time by which a run must be done (epoch ms)
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN deadline BIGINT`
    // what the attempts of a request that were answered and failed all the same cost (truncated, undecodable)
    yield* sql`ALTER TABLE offpeak_requests ADD COLUMN spent BIGINT`
    yield* sql`ALTER TABLE offpeak_requests ADD COLUMN sync_spent BIGINT`
  }),
  // where a run's requests went (an emulator, a compatible host; '' the provider's own API): the result cache is
  // shared only between runs of the same provider and endpoint
  "0007_endpoint": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN endpoint TEXT NOT NULL DEFAULT ''`
  }),
  // A run's money, tokens and cached/shared rows are running totals on its row, added to in the transaction that
  // records them (a run's summary and each budget check read one row instead of every output); the rows failed on
  // admission or by the sink, and the requests in batches, each get a partial index (counted without a scan)
  "0008_totals": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (
      const column of [
        "paid",
        "paid_sync",
        "answers",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "unpriced",
        "cached_rows",
        "shared_rows"
      ]
    ) yield* sql`ALTER TABLE offpeak_runs ADD COLUMN ${sql.literal(column)} BIGINT NOT NULL DEFAULT 0`
    // the totals of runs recorded before, read once the way they used to be read every time
    const answers = sql.literal(`FROM offpeak_outputs o JOIN offpeak_requests r ON r.run = o.run AND r.settled = o.settled
      WHERE o.run = offpeak_runs.num AND r.cached = 0`)
    const failed = sql.literal("FROM offpeak_requests WHERE run = offpeak_runs.num AND spent IS NOT NULL")
    const rows = sql.literal("FROM offpeak_items i JOIN offpeak_requests r ON r.run = i.run AND r.id = i.request WHERE i.run = offpeak_runs.num")
    yield* sql`UPDATE offpeak_runs SET
      paid = COALESCE((SELECT SUM(o.cost) ${answers}), 0) + COALESCE((SELECT SUM(spent) ${failed}), 0),
      paid_sync = COALESCE((SELECT SUM(o.sync_cost) ${answers}), 0) + COALESCE((SELECT SUM(sync_spent) ${failed}), 0),
      answers = (SELECT COUNT(*) ${answers}),
      input_tokens = COALESCE((SELECT SUM(o.input_tokens) ${answers}), 0),
      output_tokens = COALESCE((SELECT SUM(o.output_tokens) ${answers}), 0),
      cached_input_tokens = COALESCE((SELECT SUM(o.cached_input_tokens) ${answers}), 0),
      unpriced = (SELECT COUNT(*) ${answers} AND o.cost IS NULL),
      cached_rows = (SELECT COUNT(*) ${rows} AND r.cached = 1),
      shared_rows = (SELECT COUNT(*) ${rows} AND r.cached = 0 AND r.id <> i.position)
      WHERE num IS NOT NULL`
    yield* sql`CREATE INDEX offpeak_items_failed ON offpeak_items (run, position) WHERE error_kind IS NOT NULL`
    yield* sql`CREATE INDEX offpeak_requests_batched ON offpeak_requests (run, batch, id) WHERE state = 'batched'`
  }),
  // the source a run reads: an incremental run goes on from the checkpoint of a run of the same source (and endpoint),
  // not from one of another table the pipeline was pointed at before
  "0009_source": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE offpeak_runs ADD COLUMN source TEXT`
  })
}
