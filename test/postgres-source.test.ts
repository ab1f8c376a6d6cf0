/**
 * The Postgres source end to end, through the runner and the CLI, on a real PostgreSQL (`OFFPEAK_TEST_PG_URL`):
 * a `docs` table (checkpoint column `updated_at`, key `id`) → chat requests to the OpenAI emulator → JSONL parts.
 *
 * - rows that tie on the checkpoint column are all read, once, whatever the page size: 2,500 rows sharing one
 *   `updated_at` with pages of 1,000, and tie groups straddling every page boundary;
 * - an incremental rerun after edits sends exactly the edited rows (counted at the emulator), and one after no edit
 *   sends nothing;
 * - a row edited while a run reads and waits on a slow emulator is not read twice: the run reads a snapshot, the edit
 *   is the next incremental run's work, which reads the row with its new text; the same with SIGKILLs and resumes (the
 *   first kill leaves the run's checkpoint inside a tie group);
 * - the end-of-run check: a source that loses a row (hides it from `read` but not from `count`), and a row committed
 *   behind the reader with an old `updated_at`, fail the run with the figures instead of letting it end `completed`.
 */
import { Emulator } from "@offpeak/providers/openai"
import type { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Scope } from "effect"
import { afterAll, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { connect, describePostgres, freshSchema } from "../packages/core/test/support/postgres.ts"
import { killAll, query, readParts, repo, startCli, tmpDir, waitFor } from "./support/files.ts"
import { openAiSent } from "./support/providers.ts"

afterAll(killAll)

// the emulators and the schemas of this file live until it ends
const scope = Effect.runSync(Scope.make())
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

/**
 * The pipeline the CLI runs, written into each test's folder (a `node_modules` link to the repository's lets it
 * import the packages): the `docs` table through `Postgres.source` with a checkpoint column, each document's body a
 * chat request, JSONL parts. The environment sets the database, the output folder, the page size, the batch limits,
 * `incremental`, `PGT_HIDE`: the id of a row the source reads but does not yield (its positions closed up, its count
 * untouched) — a source that loses a row —, and `PGT_TRACE`: ids whose reads are written to stderr with their text.
 */
const MODULE = `
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import type * as Source from "@offpeak/core/Source"
import { Jsonl } from "@offpeak/io/jsonl"
import { Postgres } from "@offpeak/io/postgres"
import { Effect, Schema, Stream } from "effect"

const env = (name: string) => process.env[name]
const Doc = Schema.Struct({ id: Schema.Number, body: Schema.String })
type Doc = typeof Doc.Type

/** the same source with \`f\` applied to what it reads, in every form the runner asks for (resumed, bounded) */
const mapRead = (source: Source.Source<Doc>, f: (read: Source.Source<Doc>["read"]) => Source.Source<Doc>["read"]): Source.Source<Doc> => ({
  ...source,
  read: f(source.read),
  continueAfter: source.continueAfter === undefined ? undefined : (c, p) => mapRead(source.continueAfter!(c, p), f),
  snapshot: source.snapshot === undefined
    ? undefined
    : { high: source.snapshot.high, upTo: (high) => mapRead(source.snapshot!.upTo(high), f) }
})

/** a source that loses a row: it reads the row with this id but does not yield it, and closes up the positions */
const hiding = (id: number) => (read: Source.Source<Doc>["read"]) =>
  read.pipe(Stream.mapAccum(() => 0, (hidden: number, item: Source.Item<Doc>) =>
    item._tag === "Row" && item.value.id === id
      ? [hidden + 1, []] as const
      : [hidden, [hidden === 0 ? item : { ...item, position: item.position - hidden }]] as const
  ))

/** says on stderr when a row with one of these ids is read, and with which text */
const tracing = (ids: ReadonlySet<number>) => (read: Source.Source<Doc>["read"]) =>
  read.pipe(Stream.tap((item) =>
    item._tag === "Row" && ids.has(item.value.id)
      ? Effect.sync(() => process.stderr.write(\`pgt-read \${item.value.id} \${JSON.stringify(item.value.body)}\\n\`))
      : Effect.void
  ))

const docs = Postgres.source({
  url: env("DATABASE_URL")!,
  query: "SELECT id, body, updated_at FROM docs",
  schema: Doc,
  key: "id",
  checkpoint: { column: "updated_at" },
  batchSize: Number(env("PGT_PAGE") ?? 1000),
  name: "docs"
})

const traced = new Set((env("PGT_TRACE") ?? "").split(",").filter((id) => id !== "").map(Number))
const hidden = env("PGT_HIDE")
const source = mapRead(mapRead(docs, hidden ? hiding(Number(hidden)) : (read) => read), traced.size > 0 ? tracing(traced) : (read) => read)

export default Pipeline.make({
  name: "docs",
  source,
  key: (d) => String(d.id),
  request: (d) => Request.chat({ model: "gpt-4o-mini", system: "Summarize the document.", prompt: d.body, maxTokens: 40 }),
  row: (r) => ({ id: r.record.id, body: r.record.body }),
  sink: Jsonl.sink({ dir: env("PGT_OUT")! }),
  batch: {
    maxRequests: Number(env("PGT_MAX_REQUESTS") ?? 500),
    maxInFlight: Number(env("PGT_IN_FLIGHT") ?? 2),
    flushAfter: "1 second"
  },
  incremental: env("PGT_INCREMENTAL") === "1"
})
`

/** a folder with the pipeline module, an emulator, a fresh schema and the environment the CLI needs */
const setup = async (pgUrl: string, name: string, knobs: Emulator.Options = {}) => {
  const dir = tmpDir(`pgsrc-${name}`)
  fs.symlinkSync(path.join(repo, "node_modules"), path.join(dir, "node_modules"))
  const module = path.join(dir, "docs.pipeline.ts")
  fs.writeFileSync(module, MODULE)
  const [emulator, schema] = await Effect.runPromise(
    Effect.all([
      Emulator.serve({ validationMs: 5, finalizingMs: 5, linesPerSecond: 20_000, ...knobs }),
      freshSchema(pgUrl, `src_${name}`)
    ]).pipe(Scope.provide(scope))
  )
  const state = path.join(dir, "state")
  const env = {
    OPENAI_API_KEY: "test",
    OPENAI_BASE_URL: emulator.url,
    OFFPEAK_POLL_INITIAL: "50 millis",
    OFFPEAK_POLL_MAX: "200 millis",
    DATABASE_URL: schema.url
  }
  const db = path.join(state, "state.db")
  /** the CLI with this setup; `out`: the run's output folder, `extra`: more environment */
  const cli = (args: ReadonlyArray<string>, out: string, extra: Record<string, string> = {}) =>
    startCli(args[0] === "run" ? ["run", module, ...args.slice(1), "--state-dir", state] : [...args, "--state-dir", state], {
      cwd: dir,
      env: { ...env, PGT_OUT: path.join(dir, out), ...extra }
    })
  return {
    dir,
    db,
    url: emulator.url,
    pg: schema.url,
    cli,
    out: (name: string) => path.join(dir, name),
    sql: <A extends object>(statement: string) => withSql(schema.url, (sql) => sql.unsafe<A>(statement)),
    /** requests created at the emulator so far: every custom id of every batch */
    sent: async () => (await openAiSent(emulator.url)).flat(),
    /** the newest run of the state */
    lastRun: () => query<{ id: string; state: string; message: string | null }>(db, "SELECT id, state, message FROM offpeak_runs ORDER BY num DESC LIMIT 1")[0]!
  }
}

const withSql = <A>(url: string, f: (sql: PgClient.PgClient) => Effect.Effect<A, unknown>) =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(connect(url), f)))

/** `rows` documents; `at` is the SQL of `updated_at` for the row at position `p` (1-based) in the order to be read */
const createDocs = async (s: { sql: <A extends object>(statement: string) => Promise<ReadonlyArray<A>> }, rows: number, at: string) => {
  await s.sql("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, updated_at timestamptz NOT NULL)")
  await s.sql("CREATE INDEX ON docs (updated_at, id)")
  // ids scrambled against the order of updated_at (7919 is prime to every size used), rows inserted in random order:
  // the key breaks ties, the physical order does not help
  await s.sql(`INSERT INTO docs
      SELECT (p::bigint * 7919) % ${rows} + 1, 'document ' || ((p::bigint * 7919) % ${rows} + 1) || ': ' ||
        (ARRAY['refund', 'login', 'invoice', 'crash', 'shipping', 'export'])[1 + p % 6] || ' issue, ' || (p % 97) || ' words',
        ${at}
      FROM generate_series(1, ${rows}) AS p ORDER BY random()`)
}

const BASE = "'2020-01-01T09:00:00.123456Z'::timestamptz"

/** every row of a run's output: each id once, returned by id */
const deliveredOnce = (dir: string) => {
  const rows = readParts(dir) as Array<{ id: number; body: string }>
  const byId = new Map(rows.map((r) => [r.id, r]))
  expect(byId.size, `rows delivered twice in ${dir}`).toBe(rows.length)
  return byId
}

/** each request created once at the emulator: the custom ids of every batch are distinct */
const createdOnce = (sent: ReadonlyArray<string>) => {
  expect(new Set(sent).size, "requests created twice at the emulator").toBe(sent.length)
  return sent.length
}

/** what paging on the checkpoint column alone (`WHERE updated_at > $last ORDER BY updated_at LIMIT n`) would read */
const pagingOnTheColumnAlone = (pg: string, page: number) =>
  withSql(pg, (sql) =>
    Effect.gen(function*() {
      let read = 0
      let last: string | undefined
      while (true) {
        const rows: ReadonlyArray<{ c: string }> = last === undefined
          ? yield* sql.unsafe<{ c: string }>(`SELECT updated_at::text AS c FROM docs ORDER BY updated_at LIMIT ${page}`)
          : yield* sql.unsafe<{ c: string }>(`SELECT updated_at::text AS c FROM docs WHERE updated_at > $1 ORDER BY updated_at LIMIT ${page}`, [last])
        read += rows.length
        if (rows.length < page) return read
        last = rows.at(-1)!.c
      }
    }))

const completed = (exit: { code: number | null; stdout: string; stderr: string }) => {
  expect(exit.code, exit.stderr).toBe(0)
  expect(exit.stdout).toMatch(/completed/)
}

describePostgres("the Postgres source through the runner (real Postgres)", (pgUrl) => {
  it("2,500 rows sharing one updated_at, pages of 1,000: 2,500 delivered, each once", async () => {
    const s = await setup(pgUrl, "one_value")
    await createDocs(s, 2_500, BASE)
    const t0 = Date.now()
    const run = await s.cli(["run"], "out", { PGT_PAGE: "1000", PGT_MAX_REQUESTS: "500" }).exit
    const ms = Date.now() - t0
    completed(run)
    const rows = deliveredOnce(s.out("out"))
    expect(rows.size).toBe(2_500)
    const sent = createdOnce(await s.sent())
    expect(sent).toBe(2_500)
    const old = await pagingOnTheColumnAlone(s.pg, 1_000)
    console.log(
      `postgres source, one updated_at for 2,500 rows, pages of 1,000: ${rows.size} delivered once each, ${sent} requests ` +
        `created once each, run ${ms} ms (paging on the column alone would read ${old})`
    )
  }, 90_000)

  it("ties at every page boundary (3,500 rows, pages of 500, 7 rows tied across each boundary): all delivered once", async () => {
    const s = await setup(pgUrl, "boundaries")
    // position p gets its own second, except the 7 positions around each multiple of 500, which share one value
    await createDocs(
      s,
      3_500,
      `CASE WHEN round(p / 500.0) BETWEEN 1 AND 6 AND abs(p - round(p / 500.0) * 500) <= 3
        THEN ${BASE} + round(p / 500.0) * 500 * interval '1 second' ELSE ${BASE} + p * interval '1 second' END`
    )
    const [ties] = await s.sql<{ groups: number; rows: number }>(
      `SELECT count(*)::int AS groups, sum(n)::int AS rows FROM (SELECT count(*) AS n FROM docs GROUP BY updated_at HAVING count(*) > 1) g`
    )
    expect(ties).toEqual({ groups: 6, rows: 42 })
    const run = await s.cli(["run"], "out", { PGT_PAGE: "500", PGT_MAX_REQUESTS: "700" }).exit
    completed(run)
    const rows = deliveredOnce(s.out("out"))
    expect(rows.size).toBe(3_500)
    expect(createdOnce(await s.sent())).toBe(3_500)
    const old = await pagingOnTheColumnAlone(s.pg, 500)
    console.log(
      `postgres source, ${ties!.groups} tie groups of 7 across the page boundaries of 3,500 rows: ${rows.size} delivered ` +
        `once each (paging on the column alone would read ${old})`
    )
  }, 90_000)

  it("incremental reruns: after 43 edits exactly those 43 are sent (counted at the emulator), with no edit nothing", async () => {
    const s = await setup(pgUrl, "incremental")
    // groups of 10 rows share a value
    await createDocs(s, 3_000, `${BASE} + (p / 10) * interval '1 second'`)
    const env = { PGT_PAGE: "400", PGT_INCREMENTAL: "1" }
    completed(await s.cli(["run"], "out1", env).exit)
    expect(deliveredOnce(s.out("out1")).size).toBe(3_000)
    const first = createdOnce(await s.sent())
    expect(first).toBe(3_000)

    // what an application does: change the text and bump updated_at, in one statement (one now() for all)
    const edited = [...await s.sql<{ id: number; body: string }>(
      `UPDATE docs SET body = body || ' (edited)', updated_at = now() WHERE id % 70 = 0 RETURNING id, body`
    )]
    expect(edited).toHaveLength(42)
    // and one more edit later, tied with nothing
    edited.push(...await s.sql<{ id: number; body: string }>(
      `UPDATE docs SET body = body || ' (edited alone)', updated_at = now() + interval '1 second' WHERE id = 1 RETURNING id, body`
    ))
    const second = await s.cli(["run"], "out2", env).exit
    completed(second)
    const rows = deliveredOnce(s.out("out2"))
    expect([...rows.keys()].sort((a, b) => a - b)).toEqual(edited.map((e) => e.id).sort((a, b) => a - b))
    for (const e of edited) expect(rows.get(e.id)!.body).toBe(e.body)
    const afterSecond = createdOnce(await s.sent())
    expect(afterSecond - first).toBe(43)

    const third = await s.cli(["run"], "out3", env).exit
    completed(third)
    expect(readParts(s.out("out3"))).toHaveLength(0)
    const afterThird = createdOnce(await s.sent())
    expect(afterThird).toBe(afterSecond)
    console.log(
      `postgres source, incremental: first run 3,000 rows sent ${first}; after 43 edits the rerun delivered ${rows.size} ` +
        `rows, sent ${afterSecond - first} (the edited ones, with their new text); a rerun with no edit sent ${afterThird - afterSecond}`
    )
  }, 120_000)

  it("a row edited while the run reads and waits on a slow emulator is not read twice; the next incremental run reads it with its new text", async () => {
    const ROWS = 10_000
    // 500 requests a batch, one batch at a time, 2,500 lines a second: the run waits, the reader is held back
    const s = await setup(pgUrl, "midrun", { linesPerSecond: 2_500 })
    await createDocs(s, ROWS, `${BASE} + (p / 10) * interval '1 second'`)
    const [ends] = await s.sql<{ first: number; last: number }>(
      `SELECT (SELECT id FROM docs ORDER BY updated_at, id LIMIT 1) AS first,
        (SELECT id FROM docs ORDER BY updated_at DESC, id DESC LIMIT 1) AS last`
    )
    const { first: a, last: b } = ends!
    // the source says on stderr when it reads the two rows, and with which text
    const env = { PGT_PAGE: "1000", PGT_MAX_REQUESTS: "500", PGT_IN_FLIGHT: "1", PGT_INCREMENTAL: "1", PGT_TRACE: `${a},${b}` }
    const reads = (stderr: string, id: number) => [...stderr.matchAll(new RegExp(`^pgt-read ${id} (.*)$`, "gm"))].map((m) => JSON.parse(m[1]!) as string)
    const run = s.cli(["run"], "out1", env)
    await waitFor("a submitted batch", () => {
      try {
        return query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")[0]!.n > 0
      } catch {
        return false
      }
    })
    const admitted = query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_items")[0]!.n
    const [old] = await s.sql<{ a: string; b: string }>(`SELECT (SELECT body FROM docs WHERE id = ${a}) AS a, (SELECT body FROM docs WHERE id = ${b}) AS b`)
    // the first row in the read order has been read, the last not yet: edit both, as an application does
    expect(reads(run.output().stderr, a)).toEqual([old!.a])
    expect(reads(run.output().stderr, b), "the last row was not read before the edit").toEqual([])
    const edited = await s.sql<{ id: number; body: string }>(
      `UPDATE docs SET body = body || ' (edited mid-run)', updated_at = now() WHERE id IN (${a}, ${b}) RETURNING id, body`
    )
    expect(run.child.exitCode, "the run was still at work when the rows were edited").toBeNull()
    const t0 = Date.now()
    const exit = await run.exit
    completed(exit)
    const waited = Date.now() - t0
    // each read once at most in this run: the row read before the edit with the text it had then; the row not read yet
    // not at all (this run's snapshot ends before its new place: it is the next run's)
    expect(reads(exit.stderr, a)).toEqual([old!.a])
    expect(reads(exit.stderr, b)).toEqual([])
    const one = deliveredOnce(s.out("out1"))
    expect(one.get(a)!.body).toBe(old!.a)
    expect(one.has(b)).toBe(false)
    expect(one.size).toBe(ROWS - 1)
    const sentOne = createdOnce(await s.sent())
    expect(sentOne).toBe(ROWS - 1)

    const next = await s.cli(["run"], "out2", env).exit
    completed(next)
    expect(reads(next.stderr, a)).toEqual([edited.find((e) => e.id === a)!.body])
    expect(reads(next.stderr, b)).toEqual([edited.find((e) => e.id === b)!.body])
    const two = deliveredOnce(s.out("out2"))
    expect([...two.keys()].sort((x, y) => x - y)).toEqual([a, b].sort((x, y) => x - y))
    for (const e of edited) expect(two.get(e.id)!.body).toBe(e.body)
    const sentTwo = createdOnce(await s.sent()) - sentOne
    expect(sentTwo).toBe(2)
    console.log(
      `postgres source, rows edited mid-run: edited when ${admitted} of ${ROWS} rows were admitted (the run went on ` +
        `${waited} ms); run 1 read the first row once (before the edit, old text) and the last row not at all, delivered ` +
        `${one.size} rows once each; run 2 (incremental) read both once with their new text, delivered ${two.size} rows, ` +
        `sent ${sentTwo} requests`
    )
  }, 120_000)

  it("the same under SIGKILL and resume: a kill with the checkpoint inside a tie group, a kill after a mid-run edit, a kill mid-delivery", async () => {
    const ROWS = 5_000
    const s = await setup(pgUrl, "kill", { linesPerSecond: 1_500 })
    // the first 2,500 rows in the read order share one value, the rest tie in groups of 7
    await createDocs(s, ROWS, `CASE WHEN p <= 2500 THEN ${BASE} ELSE ${BASE} + (p / 7) * interval '1 second' END`)
    const env = { PGT_PAGE: "1000", PGT_MAX_REQUESTS: "250", PGT_IN_FLIGHT: "2", PGT_INCREMENTAL: "1" }
    const [ends] = await s.sql<{ first: number; last: number }>(
      `SELECT (SELECT id FROM docs ORDER BY updated_at, id LIMIT 1) AS first,
        (SELECT id FROM docs ORDER BY updated_at DESC, id DESC LIMIT 1) AS last`
    )
    const { first: a, last: b } = ends!
    const steps: Array<string> = []

    // 1. killed once the second admission chunk (2,000 rows each) is in the ledger: the run's checkpoint, written
    // after the first, is inside the tie group
    const killed = await s.cli(["run"], "out1", { ...env, OFFPEAK_FAILPOINTS: "source.admitted:2" }).exit
    expect(killed.signal, killed.stderr).toBe("SIGKILL")
    const [cp] = query<{ id: string; checkpoint: string; checkpoint_position: number }>(
      s.db,
      "SELECT id, checkpoint, checkpoint_position FROM offpeak_runs"
    )
    const runId = cp!.id
    const [tie] = await s.sql<{ n: number; value: string }>(
      `SELECT count(*)::int AS n, min(updated_at)::text AS value FROM docs WHERE updated_at = ${BASE}`
    )
    expect(tie!.n).toBe(2_500)
    expect(cp!.checkpoint_position).toBe(2_000)
    expect(JSON.parse(cp!.checkpoint).col).toBe(tie!.value)
    steps.push(`killed at source.admitted:2 with the checkpoint at row ${cp!.checkpoint_position}, inside the 2,500-row tie group`)

    // 2. resumed; once it has a batch at the provider, the first and the last row in the read order are edited; killed
    const batches = () => query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")[0]!.n
    const before = batches()
    const resumed = s.cli(["resume", runId], "out1", env)
    await waitFor("a batch submitted by the resume", () => {
      try {
        return batches() > before
      } catch {
        return false
      }
    })
    const admittedAtEdit = query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_items")[0]!.n
    const edited = await s.sql<{ id: number; body: string }>(
      `UPDATE docs SET body = body || ' (edited mid-run)', updated_at = now() WHERE id IN (${a}, ${b}) RETURNING id, body`
    )
    expect(resumed.child.exitCode, "the resume was still at work when the rows were edited").toBeNull()
    resumed.child.kill("SIGKILL")
    expect((await resumed.exit).signal).toBe("SIGKILL")
    steps.push(`resumed, killed right after editing 2 rows (${admittedAtEdit} rows admitted then)`)

    // 3. resumed and killed again as its first part is written, 4. resumed to the end
    const again = await s.cli(["resume", runId], "out1", { ...env, OFFPEAK_FAILPOINTS: "part.written:1" }).exit
    expect(again.signal, again.stderr).toBe("SIGKILL")
    steps.push("resumed, killed at part.written:1")
    completed(await s.cli(["resume", runId], "out1", env).exit)
    expect(s.lastRun().state).toBe("completed")

    const one = deliveredOnce(s.out("out1"))
    const sentOne = createdOnce(await s.sent())
    expect(sentOne).toBe(one.size)
    // every row delivered once, but for an edited row this run did not meet (the next one's)
    for (let id = 1; id <= ROWS; id++) if (id !== a && id !== b) expect(one.has(id), `row ${id}`).toBe(true)
    // an edited row this run met was read before the edit: its old text
    for (const id of [a, b]) if (one.has(id)) expect(one.get(id)!.body).not.toMatch(/edited/)
    expect(one.has(a)).toBe(true)

    // the next incremental run: exactly the two edited rows, with their new text
    completed(await s.cli(["run"], "out2", env).exit)
    const two = deliveredOnce(s.out("out2"))
    expect([...two.keys()].sort((x, y) => x - y)).toEqual([a, b].sort((x, y) => x - y))
    for (const e of edited) expect(two.get(e.id)!.body).toBe(e.body)
    const sentTwo = createdOnce(await s.sent()) - sentOne
    expect(sentTwo).toBe(2)
    console.log(
      `postgres source under SIGKILL: ${steps.join("; ")}; resumed to the end: run 1 delivered ${one.size} of ${ROWS} rows ` +
        `once each (the last row in the read order ${one.has(b) ? "read before its edit, old text" : "not met: the next run's"}), ` +
        `${sentOne} requests created once each; run 2 delivered the ${two.size} edited rows with their new text, sent ${sentTwo}`
    )
  }, 120_000)

  it("the end-of-run check: a source that loses a row fails the run with the figures, never completed", async () => {
    const s = await setup(pgUrl, "drop")
    await createDocs(s, 3_000, `${BASE} + p * interval '1 second'`)
    const run = await s.cli(["run"], "out", { PGT_PAGE: "1000", PGT_HIDE: "1234" }).exit
    expect(run.code).not.toBe(0)
    const said = `${run.stdout}\n${run.stderr}`
    expect(said).toMatch(/the source holds 3,000 rows in this run's range but 2,999 were read/)
    const last = s.lastRun()
    expect(last.state).not.toBe("completed")
    expect(last.message).toMatch(/3,000 rows in this run's range but 2,999 were read/)
    const rows = readParts(s.out("out"))
    expect(rows.some((r) => r.id === 1234)).toBe(false)
    console.log(`postgres source that hides row 1234 of 3,000 from its read: run ${last.state}: ${last.message}`)
  }, 90_000)

  it("the end-of-run check: a row committed behind the reader with an old updated_at fails the run; a new run reads it and sends only it", async () => {
    // more rows than the run holds in memory ahead of the provider (pages, chunks being admitted, sealed batches)
    const ROWS = 20_000
    const s = await setup(pgUrl, "behind", { linesPerSecond: 4_000 })
    await createDocs(s, ROWS, `${BASE} + (p / 10) * interval '1 second'`)
    const [ends] = await s.sql<{ last: number }>("SELECT id AS last FROM docs ORDER BY updated_at DESC, id DESC LIMIT 1")
    // the source says on stderr when it reads the last row in its order: the end of its read comes after that
    const env = { PGT_PAGE: "1000", PGT_MAX_REQUESTS: "1000", PGT_IN_FLIGHT: "1", PGT_TRACE: String(ends!.last) }
    const run = s.cli(["run"], "out1", env)
    await waitFor("a submitted batch", () => {
      try {
        return query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")[0]!.n > 0
      } catch {
        return false
      }
    })
    const admitted = query<{ n: number }>(s.db, "SELECT COUNT(*) AS n FROM offpeak_items")[0]!.n
    // a writer whose transaction took its now() long ago commits only now: the row sorts before everything read
    await s.sql(`INSERT INTO docs VALUES (${ROWS + 1}, 'document ${ROWS + 1}: written late', ${BASE} - interval '1 hour')`)
    // committed while the reader had not reached the last row: the read ends, and is counted, after it
    expect(run.output().stderr, "the reader had not reached its last row").not.toMatch(/^pgt-read /m)
    expect(run.child.exitCode, "the run was still reading").toBeNull()
    const exit = await run.exit
    expect(exit.code).not.toBe(0)
    expect(`${exit.stdout}\n${exit.stderr}`).toMatch(/the source holds 20,001 rows in this run's range but 20,000 were read/)
    const failed = s.lastRun()
    expect(failed.state).not.toBe("completed")
    const sentOne = createdOnce(await s.sent())

    // as the message says: a new run reads it; every other answer comes from the result cache
    const again = await s.cli(["run"], "out2", env).exit
    completed(again)
    const rows = deliveredOnce(s.out("out2"))
    expect(rows.size).toBe(ROWS + 1)
    expect(rows.get(ROWS + 1)!.body).toMatch(/written late/)
    const sentTwo = createdOnce(await s.sent()) - sentOne
    expect(sentTwo).toBe(1)
    // the failed run, followed by the one that completed, is not resumed: it would replace the later run's rows
    const stale = await s.cli(["resume", failed.id], "out1", env).exit
    expect(stale.code).not.toBe(0)
    expect(`${stale.stdout}\n${stale.stderr}`).toMatch(new RegExp(`run ${failed.id} was followed by run \\S+ \\(completed`))
    expect(createdOnce(await s.sent())).toBe(sentOne + sentTwo)
    console.log(
      `postgres source, a row committed behind the reader (inserted when ${admitted} rows were admitted): run ${failed.state}: ` +
        `${failed.message}; a new run delivered ${rows.size} rows and sent ${sentTwo} request`
    )
  }, 120_000)
})
