/**
 * BigQuery.pushdown against the BigQuery emulator alone: the job's output
 * tables are written here as Vertex writes them (pass-through keys, request,
 * response, status), so stage, tally, land and failures are checked on rows
 * chosen one by one — every kind of failure, idempotent staging and landing,
 * a retry staging only the failed keys with their original requests.
 */
import type { BigQuery as Client } from "@google-cloud/bigquery"
import type * as Source from "@offpeak/core/Source"
import { Effect, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import * as BigQuery from "../BigQuery.ts"
import type * as Emulator from "../Emulator.ts"
import * as Pushdown from "../Pushdown.ts"
import { tmp, withEmulatorEffect } from "./support.ts"

const run = <A>(f: (connection: BigQuery.Connection, emulator: Emulator.Handle, bq: Client) => Effect.Effect<A, unknown>) =>
  withEmulatorEffect({}, (emulator, bq) =>
    Effect.flatMap(Effect.promise(() => bq.createDataset("shop")), () => f({ projectId: "test-proj", apiEndpoint: emulator.url }, emulator, bq)))

const query = (bq: Client, sql: string, params?: Record<string, unknown>) =>
  Effect.promise(() => bq.query({ query: sql, ...(params === undefined ? {} : { params }) }).then(([rows]) => rows as Array<any>))

const Label = Schema.Struct({
  category: Schema.Literals(["toys", "food", "home"]),
  confidence: Schema.Number,
  count: Schema.Int,
  urgent: Schema.Boolean,
  note: Schema.optional(Schema.String),
  tags: Schema.Array(Schema.String)
})

const seedProducts = (bq: Client, n: number) =>
  query(bq, `CREATE TABLE shop.products AS SELECT n AS id, CONCAT('Product ', CAST(n AS STRING)) AS title, CONCAT('made of wood, size ', CAST(n AS STRING)) AS body, MOD(n, 2) = 0 AS even FROM UNNEST(GENERATE_ARRAY(1, ${n})) AS n`)

/** a response as Vertex writes it in the output's `response` column */
const response = (text: string, finishReason = "STOP") => ({
  candidates: [{ content: { role: "model", parts: [{ text }] }, finishReason }],
  usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 7 }
})

const good = (id: number) => JSON.stringify({ category: ["toys", "food", "home"][id % 3], confidence: id / 100, count: id, urgent: id % 2 === 0, tags: [`t${id}`] })

/** writes a job's output table as Vertex does: keys, request, response, status, processed_time (a load job) */
const writeOutput = (bq: Client, staged: Source.Staged, rows: ReadonlyArray<{ readonly id: number; readonly response?: unknown; readonly status?: string }>) =>
  Effect.promise(async () => {
    const [, , dataset, table] = /^bq:\/\/([^.]+)\.([^.]+)\.([^.]+)$/.exec(staged.output)!
    const file = path.join(tmp("pushdown-out"), "out.json")
    fs.writeFileSync(file, rows.map((r) => JSON.stringify({ id: r.id, request: { contents: [] }, response: r.response ?? null, status: r.status ?? "", processed_time: "2026-01-01T00:00:00Z" })).join("\n") + "\n")
    await bq.dataset(dataset!).table(table!).load(file, {
      sourceFormat: "NEWLINE_DELIMITED_JSON",
      schema: { fields: [
        { name: "id", type: "INTEGER" },
        { name: "request", type: "JSON" },
        { name: "response", type: "JSON" },
        { name: "status", type: "STRING" },
        { name: "processed_time", type: "TIMESTAMP" }
      ] }
    } as never)
  })

const chatPushdown = (connection: BigQuery.Connection, extra: Partial<Pushdown.Options> = {}) =>
  BigQuery.pushdown({
    source: { query: "SELECT * FROM shop.products WHERE id <= @max", params: { max: 1_000 } },
    key: "id",
    request: Pushdown.chat({
      model: "gemini-2.5-flash",
      system: "Classify the product; it's for a shop.",
      prompt: "CONCAT(title, '\\n', body)",
      maxTokens: 300,
      temperature: 0,
      output: { name: "Label", schema: Label }
    }),
    target: { table: "shop.labels" },
    dataset: "offpeak_staging",
    connection,
    ...extra
  })

describe("BigQuery.pushdown", () => {
  it("stage builds each row's GenerateContentRequest in BigQuery: the prompt from the row's columns, constants as parameters, keys passed through", async () => {
    await run((connection, emulator, bq) =>
      Effect.gen(function*() {
        yield* seedProducts(bq, 30)
        const pd = chatPushdown(connection)
        const staged = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        expect(staged.kind).toBe("bigquery")
        expect(staged.model).toBe("gemini-2.5-flash")
        expect(staged.keyColumns).toEqual(["id"])
        expect(staged.rows).toBe(30)
        expect(staged.input).toMatch(/^bq:\/\/test-proj\.offpeak_staging\.offpeak_[0-9a-f]{16}_in$/)
        expect(staged.output).toBe(staged.input.replace(/_in$/, "_out"))
        // the SQL carries no value: the system text and the schema are parameters
        expect(pd.requestSql).toBe("PARSE_JSON(CONCAT(@__offpeak_head, TO_JSON_STRING(CAST((CONCAT(title, '\\n', body)) AS STRING)), @__offpeak_tail))")
        expect(pd.requestSql).not.toContain("Classify")
        const table = staged.input.slice("bq://test-proj.".length)
        const rows = yield* query(bq, `SELECT id, request FROM ${table} ORDER BY id`)
        expect(rows.map((r) => r.id)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
        const request = JSON.parse(rows[6]!.request)
        expect(request.contents).toEqual([{ role: "user", parts: [{ text: "Product 7\nmade of wood, size 7" }] }])
        expect(request.systemInstruction).toEqual({ parts: [{ text: "Classify the product; it's for a shop." }] })
        expect(request.generationConfig.maxOutputTokens).toBe(300)
        expect(request.generationConfig.temperature).toBe(0)
        expect(request.generationConfig.responseMimeType).toBe("application/json")
        // strict structured output: an optional field is required and nullable
        expect(request.generationConfig.responseJsonSchema.required).toEqual(["category", "confidence", "count", "urgent", "note", "tags"])
        expect(request.generationConfig.responseJsonSchema.properties.category).toEqual({ type: "string", enum: ["toys", "food", "home"] })
        // staging again (a crash, a resume) finds the job by its id: no second CREATE runs
        const jobs = (yield* emulator.stats).jobsCreated
        const again = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        expect(again).toEqual(staged)
        const queries = (yield* emulator.stats).jobsCreated - jobs
        console.log(`pushdown stage: 30 rows staged as ${staged.input}; staging again created ${queries} job(s) (the count query), request: ${rows[6]!.request.slice(0, 120)}…`)
        expect(queries).toBe(1)
      }))
  })

  it("a NULL or repeated key fails the stage, naming the key", async () => {
    await run((connection, _emulator, bq) =>
      Effect.gen(function*() {
        yield* query(bq, "CREATE TABLE shop.products AS SELECT 1 AS id, 'a' AS title, 'x' AS body UNION ALL SELECT 2, 'b', 'y' UNION ALL SELECT 2, 'c', 'z'")
        const dup = yield* Effect.flip(chatPushdown(connection).stage({ runId: "r", batchId: "b1" }))
        expect(dup.message).toMatch(/1 source row\(s\) repeat a key \(2 ×2\)/)
        yield* query(bq, "CREATE OR REPLACE TABLE shop.products AS SELECT 1 AS id, 'a' AS title, 'x' AS body UNION ALL SELECT CAST(NULL AS INT64), 'b', 'y'")
        // (the query source's `WHERE id <= @max` would drop a NULL id: read the table itself)
        const nul = yield* Effect.flip(chatPushdown(connection, { source: { table: "shop.products" } }).stage({ runId: "r", batchId: "b2" }))
        expect(nul.message).toMatch(/1 source row\(s\) have a NULL key \(id\)/)
        console.log(`pushdown keys: ${dup.message} | ${nul.message}`)
      }))
  })

  it("tally, failures and land: each failure named; land MERGEs the decoded fields, and landing again changes nothing", async () => {
    await run((connection, emulator, bq) =>
      Effect.gen(function*() {
        yield* seedProducts(bq, 12)
        const pd = chatPushdown(connection)
        const staged = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        yield* writeOutput(bq, staged, [
          { id: 1, response: response(good(1)) },
          { id: 2, response: response(good(2)) },
          { id: 3, response: response(good(3)) },
          { id: 3, status: JSON.stringify({ code: 8, message: "retried inside the job", status: "RESOURCE_EXHAUSTED" }) }, // a key twice: the good answer wins
          // 4: no row at all (the job ended first)
          { id: 5, status: JSON.stringify({ code: 8, message: "Quota exceeded", status: "RESOURCE_EXHAUSTED" }) },
          { id: 6, response: response("{\"category\": \"toys\", \"confid", "MAX_TOKENS") },
          { id: 7, response: response("I cannot classify this.") },
          { id: 8, response: response(JSON.stringify({ category: "cars", confidence: 0.1, count: 1, urgent: false, tags: [] })) },
          { id: 9, response: response(JSON.stringify({ category: "toys", confidence: "high", count: 1, urgent: false, tags: [] })) },
          { id: 10, response: response(JSON.stringify({ category: "toys", confidence: 0.5, count: 1.5, urgent: false, tags: [] })) },
          { id: 11, response: response(JSON.stringify({ category: "food", confidence: 0.5, urgent: true, tags: [] })) },
          { id: 12, response: response(JSON.stringify({ category: "home", confidence: 0.25, count: 4, urgent: "yes", tags: ["a"], note: "n" })) }
        ])
        const tally = yield* pd.tally(staged)
        expect(tally).toEqual({ succeeded: 3, failed: 9 })
        const failures = [...yield* Stream.runCollect(pd.failures(staged))].sort((a, b) => Number(a.key) - Number(b.key))
        expect(failures.map((f) => [f.key, f.message])).toEqual([
          ["4", "no answer: the job ended without answering this row"],
          ["5", "the job failed the row: {\"code\":8,\"message\":\"Quota exceeded\",\"status\":\"RESOURCE_EXHAUSTED\"}"],
          ["6", "the answer is not complete (finishReason MAX_TOKENS)"],
          ["7", "the answer is not a JSON object"],
          ["8", "field \"category\": expected one of \"toys\", \"food\", \"home\", got \"cars\""],
          ["9", "field \"confidence\": expected a number, got \"high\""],
          ["10", "field \"count\": expected an integer, got 1.5"],
          ["11", "field \"count\": expected an integer, got nothing"],
          ["12", "field \"urgent\": expected a boolean, got \"yes\""]
        ])
        expect(failures.find((f) => f.key === "7")!.raw).toBe("I cannot classify this.")
        expect(failures.find((f) => f.key === "4")!.raw).toBeUndefined()
        const landed = yield* pd.land(staged, { runId: "run-1", batchId: "batch-1" })
        expect(landed).toBe(3)
        const target = yield* query(bq, "SELECT * FROM shop.labels ORDER BY id")
        expect(target).toEqual([
          { id: 1, category: "food", confidence: 0.01, count: 1, urgent: false, note: null, tags: "[\"t1\"]" },
          { id: 2, category: "home", confidence: 0.02, count: 2, urgent: true, note: null, tags: "[\"t2\"]" },
          { id: 3, category: "toys", confidence: 0.03, count: 3, urgent: false, note: null, tags: "[\"t3\"]" }
        ])
        const [meta] = yield* Effect.promise(() => bq.dataset("shop").table("labels").getMetadata())
        expect(meta.schema.fields.map((f: { name: string; type: string; mode: string }) => `${f.name}:${f.type}:${f.mode}`)).toEqual([
          "id:INTEGER:REQUIRED", "category:STRING:NULLABLE", "confidence:FLOAT:NULLABLE", "count:INTEGER:NULLABLE", "urgent:BOOLEAN:NULLABLE", "note:STRING:NULLABLE", "tags:JSON:NULLABLE"
        ])
        // landing again (a crash before the ledger knew): the MERGE's job is found, not run again
        const jobs = (yield* emulator.stats).jobsCreated
        expect(yield* pd.land(staged, { runId: "run-1", batchId: "batch-1" })).toBe(3)
        expect((yield* emulator.stats).jobsCreated - jobs).toBe(0) // the land's job id is taken (409): the MERGE is not run again
        expect(yield* query(bq, "SELECT COUNT(*) AS n FROM shop.labels")).toEqual([{ n: 3 }])
        console.log(`pushdown tally ${JSON.stringify(tally)}; failures:\n  ${failures.map((f) => `${f.key}: ${f.message}`).join("\n  ")}\n  landed ${landed}, again ${landed}`)
      }))
  })

  it("a source row whose prompt is NULL is named as such among the failures, not by the provider's \"not valid JSON\"", async () => {
    await run((connection, _emulator, bq) =>
      Effect.gen(function*() {
        yield* query(bq, `CREATE TABLE shop.products AS SELECT n AS id, CONCAT('Product ', CAST(n AS STRING)) AS title, IF(n = 2, NULL, 'oak') AS body, TRUE AS even FROM UNNEST(GENERATE_ARRAY(1, 3)) AS n`)
        const pd = chatPushdown(connection)
        const staged = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        yield* writeOutput(bq, staged, [
          { id: 1, response: response(good(1)) },
          { id: 2, status: JSON.stringify({ code: 3, message: "The request is not valid JSON.", status: "INVALID_ARGUMENT" }) },
          { id: 3, response: response(good(3)) }
        ])
        expect(yield* pd.tally(staged)).toEqual({ succeeded: 2, failed: 1 })
        const failures = [...yield* Stream.runCollect(pd.failures(staged))]
        expect(failures.map((f) => [f.key, f.message])).toEqual([["2", "the source row gives no prompt: its expression is NULL"]])
      }))
  })

  it("a retry stages only the failed keys with their first requests; landing both jobs puts every key in the target once", async () => {
    await run((connection, _emulator, bq) =>
      Effect.gen(function*() {
        yield* seedProducts(bq, 50)
        const pd = chatPushdown(connection)
        const first = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        const failing = new Set([3, 7, 8, 20, 49])
        yield* writeOutput(bq, first, Array.from({ length: 50 }, (_, i) => i + 1).filter((id) => id !== 20).map((id) =>
          failing.has(id) ? { id, status: "{\"code\":13,\"message\":\"Internal error\",\"status\":\"INTERNAL\"}" } : { id, response: response(good(id)) }
        ))
        expect(yield* pd.tally(first)).toEqual({ succeeded: 45, failed: 5 })
        expect(yield* pd.land(first, { runId: "run-1", batchId: "batch-1" })).toBe(45)
        const retry = yield* pd.stage({ runId: "run-1", batchId: "batch-1-retry-1", retryOf: first })
        expect(retry.rows).toBe(5)
        const retryTable = retry.input.slice("bq://test-proj.".length)
        const firstTable = first.input.slice("bq://test-proj.".length)
        const staged = yield* query(bq, `SELECT r.id, TO_JSON_STRING(r.request) = TO_JSON_STRING(f.request) AS same FROM ${retryTable} AS r JOIN ${firstTable} AS f ON r.id = f.id ORDER BY r.id`)
        expect(staged).toEqual([3, 7, 8, 20, 49].map((id) => ({ id, same: true })))
        yield* writeOutput(bq, retry, [3, 7, 8, 20, 49].map((id) => ({ id, response: response(good(id)) })))
        expect(yield* pd.tally(retry)).toEqual({ succeeded: 5, failed: 0 })
        expect(yield* pd.land(retry, { runId: "run-1", batchId: "batch-1-retry-1" })).toBe(5)
        const rows = yield* query(bq, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d, MIN(id) AS lo, MAX(id) AS hi FROM shop.labels")
        expect(rows).toEqual([{ n: 50, d: 50, lo: 1, hi: 50 }])
        const again = yield* pd.stage({ runId: "run-1", batchId: "batch-1-retry-2", retryOf: retry })
        expect(again.rows).toBe(0)
        console.log(`pushdown retry: job 1 45/50 landed, retry staged ${retry.rows} keys (${staged.map((s) => s.id).join(", ")}) with their first requests, target 50 keys once; a retry of the retry stages ${again.rows}`)
      }))
  })

  it("a job that wrote no output (failed or cancelled before it started): every row failed with no answer, nothing lands, all retried", async () => {
    await run((connection, _emulator, bq) =>
      Effect.gen(function*() {
        yield* seedProducts(bq, 8)
        const pd = chatPushdown(connection)
        const staged = yield* pd.stage({ runId: "run-1", batchId: "batch-1" })
        expect(yield* pd.tally(staged)).toEqual({ succeeded: 0, failed: 8 })
        expect(yield* pd.land(staged, { runId: "run-1", batchId: "batch-1" })).toBe(0)
        const failures = yield* Stream.runCollect(pd.failures(staged))
        expect(new Set([...failures].map((f) => f.message))).toEqual(new Set(["no answer: the job ended without answering this row"]))
        const retry = yield* pd.stage({ runId: "run-1", batchId: "batch-2", retryOf: staged })
        expect(retry.rows).toBe(8)
        console.log(`pushdown without output: tally 0/8, ${failures.length} failures "no answer", retry of ${retry.rows}`)
      }))
  })

  it("embeddings: a `content` column built in BigQuery; the vector lands as JSON", async () => {
    await run((connection, _emulator, bq) =>
      Effect.gen(function*() {
        yield* seedProducts(bq, 4)
        const pd = BigQuery.pushdown({
          source: { table: "shop.products" },
          key: "id",
          request: Pushdown.embedding({ model: "text-embedding-005", input: "CONCAT(title, ': ', body)" }),
          target: { table: "shop.vectors", embeddingColumn: "vec" },
          dataset: "offpeak_staging",
          connection
        })
        const staged = yield* pd.stage({ runId: "r", batchId: "e1" })
        const table = staged.input.slice("bq://test-proj.".length)
        expect(yield* query(bq, `SELECT id, content FROM ${table} ORDER BY id LIMIT 1`)).toEqual([{ id: 1, content: "Product 1: made of wood, size 1" }])
        const [, , dataset, out] = /^bq:\/\/([^.]+)\.([^.]+)\.([^.]+)$/.exec(staged.output)!
        const file = path.join(tmp("pushdown-emb"), "out.json")
        fs.writeFileSync(file, [1, 2, 3].map((id) => JSON.stringify({ id, content: "x", predictions: JSON.stringify([{ embeddings: { values: [id, 0.5], statistics: { token_count: 3 } } }]), status: "" })).join("\n") + "\n")
        yield* Effect.promise(() => bq.dataset(dataset!).table(out!).load(file, {
          sourceFormat: "NEWLINE_DELIMITED_JSON",
          schema: { fields: [{ name: "id", type: "INTEGER" }, { name: "content", type: "STRING" }, { name: "predictions", type: "STRING" }, { name: "status", type: "STRING" }] }
        } as never))
        expect(yield* pd.tally(staged)).toEqual({ succeeded: 3, failed: 1 })
        expect(yield* pd.land(staged, { runId: "r", batchId: "e1" })).toBe(3)
        const rows = yield* query(bq, "SELECT id, vec FROM shop.vectors ORDER BY id")
        expect(rows.map((r) => [r.id, JSON.parse(r.vec)])).toEqual([[1, [1, 0.5]], [2, [2, 0.5]], [3, [3, 0.5]]])
        console.log(`pushdown embeddings: 4 staged, 3 landed as JSON vectors`)
      }))
  })

  it("refuses what it cannot run server-side: no output schema, a field named like a key, a record; each stage fails with the reason", async () => {
    await run((connection) =>
      Effect.gen(function*() {
        const base = { source: { table: "shop.products" }, key: "id", target: { table: "shop.t" }, dataset: "st", connection } as const
        const cases = [
          BigQuery.pushdown({ ...base, request: Pushdown.chat({ model: "gemini-2.5-flash", prompt: "body" }) }),
          BigQuery.pushdown({ ...base, request: Pushdown.chat({ model: "gemini-2.5-flash", prompt: "body", output: { name: "X", schema: Schema.Struct({ id: Schema.String }) } }) }),
          BigQuery.pushdown({ ...base, request: Pushdown.chat({ model: "gemini-2.5-flash", prompt: "body", output: { name: "X", schema: Schema.Record(Schema.String, Schema.String) } }) })
        ]
        const messages: Array<string> = []
        for (const pd of cases) messages.push((yield* Effect.flip(pd.stage({ runId: "r", batchId: "b" }))).message)
        expect(messages[0]).toMatch(/needs an output schema/)
        expect(messages[1]).toMatch(/the output field "id" has the name of a key column/)
        expect(messages[2]).toMatch(/must name its fields|must be a struct/)
        console.log(`pushdown refusals:\n  ${messages.join("\n  ")}`)
      }))
  })
})
