/**
 * The Vertex emulator driven by the official clients only: `@google/genai`
 * in Vertex mode for the jobs (create, get, list, cancel, delete, the
 * synchronous calls), `@google-cloud/bigquery` and `@google-cloud/storage`
 * to set up inputs and read outputs from the BigQuery and Cloud Storage
 * emulators the jobs read and write. Raw HTTP reads check what the SDK does
 * not show (labels, list filters, error bodies).
 */
import { ApiError } from "@google/genai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Engine } from "../../local/index.ts"
import { LOCATION, PROJECT, promise, requestJson, rows, stack, tmpDir, untilDone } from "./vertexSupport.ts"

const SCHEMA = { type: "object", properties: { category: { type: "string", enum: ["toys", "food", "home"] } }, required: ["category"] }

/** creates `ds.input` with `n` rows: id, a label passed through, and a `request` column */
const seedRequests = (bq: ReturnType<typeof import("./vertexSupport.ts").bigquery>, n: number, table = "input") =>
  promise(async () => {
    await bq.createDataset("ds").catch(() => undefined)
    await bq.query({
      query: `CREATE TABLE ds.${table} AS SELECT n AS id, CONCAT('tag-', CAST(n AS STRING)) AS tag, DATE '2024-01-02' AS day,
        PARSE_JSON(CONCAT('{"contents":[{"role":"user","parts":[{"text":', TO_JSON_STRING(CONCAT('Classify product ', CAST(n AS STRING))), '}]}],"generationConfig":', @config, '}')) AS request
        FROM UNNEST(GENERATE_ARRAY(1, ${n})) AS n`,
      params: { config: JSON.stringify({ responseMimeType: "application/json", responseJsonSchema: SCHEMA }) }
    })
  })

/** the raw JSON of a GET on the emulator */
const raw = (url: string, pathname: string) => promise(async () => (await (await fetch(`${url}/v1beta1/${pathname}`)).json()) as any)

const failure = <A>(f: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: f, catch: (e) => e as ApiError }))

const jobsPath = `projects/${PROJECT}/locations/${LOCATION}/batchPredictionJobs`

describe("VertexEmulator through @google/genai, @google-cloud/bigquery and @google-cloud/storage", () => {
  it.live("BigQuery in and out: PENDING → RUNNING → SUCCEEDED, completionStats grow chunk by chunk, pass-through columns, request, response, status", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 20, rowsPerSecond: 150, pendingMs: 1_000 })
      yield* seedRequests(s.bqClient, 60)
      const created = yield* promise(() =>
        s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { displayName: "bq-1", dest: `bq://${PROJECT}.ds` } })
      )
      assert.strictEqual(created.state, "JOB_STATE_PENDING")
      assert.match(created.name!, new RegExp(`^${jobsPath}/\\d+$`))
      assert.deepStrictEqual(created.src, { format: "bigquery", bigqueryUri: `bq://${PROJECT}.ds.input` })
      // completionStats seen while it runs
      const counts: Array<number> = []
      const { job, seen } = yield* promise(async () => {
        const seen: Array<string> = []
        for (let i = 0; i < 2_000; i++) {
          const j = await s.ai.batches.get({ name: created.name! })
          if (seen.at(-1) !== j.state) seen.push(j.state!)
          const done = Number(j.completionStats?.successfulCount ?? 0)
          if (counts.at(-1) !== done) counts.push(done)
          if (j.state === "JOB_STATE_SUCCEEDED" || j.state === "JOB_STATE_FAILED") return { job: j, seen }
          await new Promise((r) => setTimeout(r, 10))
        }
        throw new Error("did not end")
      })
      assert.deepStrictEqual(seen, ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
      assert.isAtLeast(counts.length, 3, `completionStats grew: ${counts.join(" → ")}`)
      assert.deepStrictEqual(job.completionStats, { successfulCount: "60", failedCount: "0", incompleteCount: "0" })
      const info = job.outputInfo! as { bigqueryOutputDataset?: string; bigqueryOutputTable?: string }
      assert.strictEqual(info.bigqueryOutputDataset, `bq://${PROJECT}.ds`)
      assert.match(info.bigqueryOutputTable!, /^predictions_\d{4}_\d\d_\d\dT/)
      const [meta] = yield* promise(() => s.bqClient.dataset("ds").table(info.bigqueryOutputTable!).getMetadata())
      assert.deepStrictEqual(
        (meta.schema.fields as Array<{ name: string; type: string }>).map((f) => `${f.name} ${f.type}`),
        ["id INTEGER", "tag STRING", "day DATE", "request JSON", "response JSON", "status STRING", "processed_time TIMESTAMP"]
      )
      const out = yield* rows(s.bqClient, `SELECT id, tag, day, request, response, status FROM ds.${info.bigqueryOutputTable} ORDER BY id`)
      assert.strictEqual(out.length, 60)
      assert.deepStrictEqual(out.map((r) => r.id), Array.from({ length: 60 }, (_, i) => i + 1))
      const r7 = out[6]!
      assert.strictEqual(r7.tag, "tag-7")
      assert.strictEqual(r7.day.value, "2024-01-02")
      assert.strictEqual(r7.status, "")
      const response = JSON.parse(r7.response)
      const want = Engine.chat({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "Classify product 7" }], jsonSchema: SCHEMA })
      assert.strictEqual(response.candidates[0].content.parts[0].text, want.text)
      assert.strictEqual(response.candidates[0].finishReason, "STOP")
      assert.strictEqual(response.usageMetadata.candidatesTokenCount, want.usage.outputTokens)
      assert.deepStrictEqual(JSON.parse(r7.request).contents[0].parts[0].text, "Classify product 7")
      console.log(`vertex emulator bq: states ${seen.join(" → ")}, successfulCount ${counts.join(" → ")}, output ${info.bigqueryOutputTable} (60 rows)`)
    }).pipe(Effect.scoped))

  it.live("BigQuery output URIs: an existing table fails the job; a missing input fails NOT_FOUND; bq://project makes a dataset", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* seedRequests(s.bqClient, 3)
      yield* promise(() => s.bqClient.query({ query: "CREATE TABLE ds.taken (x INT64)" }))
      const taken = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.taken` } }))
      const a = yield* untilDone(s.ai, taken.name!)
      assert.strictEqual(a.job.state, "JOB_STATE_FAILED")
      assert.match(a.job.error!.message!, /already exists/)
      const missing = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.nope`, config: { dest: `bq://${PROJECT}.ds` } }))
      const b = yield* untilDone(s.ai, missing.name!)
      assert.strictEqual(b.job.state, "JOB_STATE_FAILED")
      assert.strictEqual(b.job.error!.code, 5)
      const fresh = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.fresh` } }))
      const c = yield* untilDone(s.ai, fresh.name!)
      assert.strictEqual(c.job.state, "JOB_STATE_SUCCEEDED")
      assert.strictEqual(c.job.outputInfo!.bigqueryOutputTable, "fresh")
      const project = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}` } }))
      const d = yield* untilDone(s.ai, project.name!)
      assert.strictEqual(d.job.state, "JOB_STATE_SUCCEEDED")
      assert.match((d.job.outputInfo as { bigqueryOutputDataset?: string }).bigqueryOutputDataset!, new RegExp(`^bq://${PROJECT}\\.prediction_gemini_2_5_flash_`))
      console.log(`vertex emulator output uris: existing table → ${a.job.error!.message}; missing input → code ${b.job.error!.code}`)
    }).pipe(Effect.scoped))

  it.live("text embedding over a `content` column: `predictions` holds the engine's vector, the dimension from modelParameters", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* promise(async () => {
        await s.bqClient.createDataset("ds")
        await s.bqClient.query({ query: "CREATE TABLE ds.docs AS SELECT n AS id, CONCAT('document number ', CAST(n AS STRING)) AS content FROM UNNEST(GENERATE_ARRAY(1, 5)) AS n" })
      })
      const created = yield* promise(() =>
        s.ai.batches.create({
          model: "text-embedding-005",
          src: `bq://${PROJECT}.ds.docs`,
          config: { dest: `bq://${PROJECT}.ds.vectors`, httpOptions: { extraBody: { modelParameters: { outputDimensionality: 32 } } } }
        })
      )
      const { job } = yield* untilDone(s.ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED", JSON.stringify(job.error))
      const out = yield* rows(s.bqClient, "SELECT id, content, predictions, status FROM ds.vectors ORDER BY id")
      assert.strictEqual(out.length, 5)
      const p = JSON.parse(out[2]!.predictions)
      const want = Engine.embed({ model: "text-embedding-005", input: "document number 3", dimensions: 32 })
      assert.deepStrictEqual(p[0].embeddings.values, want.vector)
      assert.strictEqual(p[0].embeddings.statistics.token_count, want.usage.inputTokens)
      assert.strictEqual(out[2]!.content, "document number 3")
      console.log(`vertex emulator embeddings: 5 rows, ${p[0].embeddings.values.length} dimensions`)
    }).pipe(Effect.scoped))

  it.live("Cloud Storage in and out: predictions*.jsonl under outputInfo.gcsOutputDirectory (not the prefix), lines {status, processed_time, request, response}, shuffled; Gemini embedding lines keep their key", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 7 })
      const bucket = s.storage.bucket("batches")
      yield* promise(() => s.storage.createBucket("batches"))
      const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ request: { ...JSON.parse(requestJson(`item ${i}`)), labels: { row: `r${i}` } } }))
      yield* promise(() => bucket.file("in/chat.jsonl").save(lines.join("\n") + "\n", { resumable: false }))
      const created = yield* promise(() =>
        s.ai.batches.create({ model: "gemini-2.5-flash", src: "gs://batches/in/chat.jsonl", config: { dest: "gs://batches/out" } })
      )
      const { job } = yield* untilDone(s.ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED")
      const dir = job.outputInfo!.gcsOutputDirectory!
      assert.match(dir, /^gs:\/\/batches\/out\/prediction-model-\d{4}-\d\d-\d\dT[\d:.]+Z$/)
      const [files] = yield* promise(() => bucket.getFiles({ prefix: `${dir.slice("gs://batches/".length)}/` }))
      assert.deepStrictEqual(files.map((f) => f.name.split("/").at(-1)), ["predictions_00000.jsonl", "predictions_00001.jsonl", "predictions_00002.jsonl"])
      const out: Array<any> = []
      for (const f of files) {
        const [bytes] = yield* promise(() => f.download())
        out.push(...bytes.toString("utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l)))
      }
      assert.strictEqual(out.length, 20)
      assert.deepStrictEqual(Object.keys(out[0]).sort(), ["processed_time", "request", "response", "status"])
      const rowsSeen = out.map((l) => l.request.labels.row)
      assert.deepStrictEqual([...rowsSeen].sort(), Array.from({ length: 20 }, (_, i) => `r${i}`).sort())
      assert.isTrue(rowsSeen.some((r, i) => r !== `r${i}`), "shuffled within chunks")
      const line = out.find((l) => l.request.labels.row === "r4")
      assert.strictEqual(line.status, "")
      assert.strictEqual(line.response.candidates[0].content.parts[0].text, Engine.chat({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "item 4" }] }).text)
      // Gemini embedding lines: {key, request: {content, embed_content_config}}
      const emb = Array.from({ length: 3 }, (_, i) => JSON.stringify({ key: `e${i}`, request: { content: { parts: [{ text: `doc ${i}` }] }, embed_content_config: { output_dimensionality: 12 } } }))
      yield* promise(() => bucket.file("in/emb.jsonl").save(emb.join("\n") + "\n", { resumable: false }))
      const e = yield* promise(() => s.ai.batches.create({ model: "gemini-embedding-001", src: "gs://batches/in/emb.jsonl", config: { dest: "gs://batches/emb-out" } }))
      const ej = yield* untilDone(s.ai, e.name!)
      const [efiles] = yield* promise(() => bucket.getFiles({ prefix: `${ej.job.outputInfo!.gcsOutputDirectory!.slice("gs://batches/".length)}/` }))
      const [ebytes] = yield* promise(() => efiles[0]!.download())
      const elines = ebytes.toString("utf8").trim().split("\n").map((l) => JSON.parse(l))
      assert.deepStrictEqual(elines.map((l) => l.key).sort(), ["e0", "e1", "e2"])
      assert.strictEqual(elines[0].response.embedding.values.length, 12)
      console.log(`vertex emulator gcs: ${dir} holds ${files.length} objects, ${out.length} lines; gemini embedding ${elines.length} lines`)
    }).pipe(Effect.scoped))

  it.live("list newest first with filters (display_name, labels.*, state) and pages; get unknown → 404; delete only ended jobs", () =>
    Effect.gen(function*() {
      const s = yield* stack({ rowsPerSecond: 5 })
      yield* seedRequests(s.bqClient, 2)
      const names: Array<string> = []
      for (const [i, label] of ["a", "b", "a"].entries()) {
        const job = yield* promise(() =>
          s.ai.batches.create({
            model: "gemini-2.5-flash",
            src: `bq://${PROJECT}.ds.input`,
            config: { displayName: `job ${i}`, dest: `bq://${PROJECT}.ds`, httpOptions: { extraBody: { labels: { team: label } } } }
          })
        )
        names.push(job.name!)
      }
      const all = yield* raw(s.vertex.url, `${jobsPath}`)
      assert.deepStrictEqual(all.batchPredictionJobs.map((j: any) => j.name), [...names].reverse())
      assert.deepStrictEqual(all.batchPredictionJobs[0].labels, { team: "a" })
      const byName = yield* raw(s.vertex.url, `${jobsPath}?filter=${encodeURIComponent('display_name="job 1"')}`)
      assert.deepStrictEqual(byName.batchPredictionJobs.map((j: any) => j.name), [names[1]])
      const byLabel = yield* raw(s.vertex.url, `${jobsPath}?filter=${encodeURIComponent('labels.team="a" AND state!=JOB_STATE_FAILED')}`)
      assert.deepStrictEqual(byLabel.batchPredictionJobs.map((j: any) => j.name), [names[2], names[0]])
      // the SDK's pager walks pageToken
      const pager = yield* promise(() => s.ai.batches.list({ config: { pageSize: 2 } }))
      const paged: Array<string> = []
      for (const j of pager.page) paged.push(j.name!)
      assert.isTrue(pager.hasNextPage())
      const next = yield* promise(() => pager.nextPage())
      for (const j of next) paged.push(j.name!)
      assert.deepStrictEqual(paged, [...names].reverse())
      const bad = yield* failure(() => s.ai.batches.list({ config: { filter: "create_time>1" } }))
      assert.strictEqual(bad.status, 400)
      const unknown = yield* failure(() => s.ai.batches.get({ name: `${jobsPath}/12345` }))
      assert.strictEqual(unknown.status, 404)
      const running = yield* failure(() => s.ai.batches.delete({ name: names[0]! }))
      assert.strictEqual(running.status, 400)
      yield* promise(() => s.ai.batches.cancel({ name: names[0]! }))
      yield* untilDone(s.ai, names[0]!)
      yield* promise(() => s.ai.batches.delete({ name: names[0]! }))
      const gone = yield* failure(() => s.ai.batches.get({ name: names[0]! }))
      assert.strictEqual(gone.status, 404)
      console.log(`vertex emulator list: ${names.length} jobs, filters and pages ok; delete of a running job → ${running.status}`)
    }).pipe(Effect.scoped))

  it.live("faults: failed rows carry a status and no response; a failed job carries its error; 503 on get", () =>
    Effect.gen(function*() {
      const s = yield* stack({
        rowFailures: [{ code: "RESOURCE_EXHAUSTED", rate: 0.2 }, { code: "INVALID_ARGUMENT", rate: 0.1 }],
        failJobs: { times: 1, code: "RESOURCE_EXHAUSTED", message: "Quota exceeded for concurrent batch jobs." },
        endpointFaults: [{ endpoint: "batchPredictionJobs.get", status: 503, times: 2 }],
        createSucceedsThenFails: 0
      })
      yield* seedRequests(s.bqClient, 100)
      const first = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds` } }))
      // the first two gets answer 503 (the SDK raises; nothing retries here)
      const e1 = yield* failure(() => s.ai.batches.get({ name: first.name! }))
      const e2 = yield* failure(() => s.ai.batches.get({ name: first.name! }))
      assert.deepStrictEqual([e1.status, e2.status], [503, 503])
      const failed = yield* untilDone(s.ai, first.name!)
      assert.strictEqual(failed.job.state, "JOB_STATE_FAILED")
      assert.deepStrictEqual(failed.job.error, { code: 8, message: "Quota exceeded for concurrent batch jobs." })
      const second = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.second` } }))
      const ok = yield* untilDone(s.ai, second.name!)
      assert.strictEqual(ok.job.state, "JOB_STATE_SUCCEEDED")
      const out = yield* rows(s.bqClient, "SELECT status, response IS NULL AS none FROM ds.second")
      const bad = out.filter((r) => r.status !== "")
      assert.strictEqual(Number(ok.job.completionStats!.failedCount), bad.length)
      assert.isAbove(bad.length, 10)
      assert.isTrue(bad.every((r) => r.none === true))
      const codes = new Set(bad.map((r) => JSON.parse(r.status).status))
      assert.deepStrictEqual([...codes].sort(), ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"])
      console.log(`vertex emulator faults: job 1 ${failed.job.state} (${failed.job.error!.message}); job 2 ${bad.length}/100 rows failed in status`)
    }).pipe(Effect.scoped))

  it.live("a create that answers 500 has made its job (a client must find it), and a late create answers after the job exists", () =>
    Effect.gen(function*() {
      const s = yield* stack({ createSucceedsThenFails: 1, createLatency: { ms: 400, times: 1 } })
      yield* seedRequests(s.bqClient, 2)
      const started = Date.now()
      const creating = yield* Effect.forkChild(failure(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { displayName: "lost answer", dest: `bq://${PROJECT}.ds` } })))
      yield* Effect.sleep(150)
      // while the create has not answered, the job is there
      const during = yield* raw(s.vertex.url, `${jobsPath}?filter=${encodeURIComponent('display_name="lost answer"')}`)
      assert.strictEqual(during.batchPredictionJobs.length, 1)
      const err = yield* Fiber.join(creating)
      const waited = Date.now() - started
      assert.isAtLeast(waited, 390)
      assert.strictEqual(err.status, 500)
      const listed = yield* raw(s.vertex.url, `${jobsPath}?filter=${encodeURIComponent('display_name="lost answer"')}`)
      assert.strictEqual(listed.batchPredictionJobs.length, 1)
      const stats = yield* s.vertex.stats
      assert.strictEqual(stats.jobsCreated, 1)
      console.log(`vertex emulator create faults: 500 answered, the job exists (${listed.batchPredictionJobs[0].name}); answered after ${waited} ms`)
    }).pipe(Effect.scoped))

  it.live("cancel: CANCELLING → CANCELLED with error code 1, rows written before are kept; an ended job cannot be cancelled", () =>
    Effect.gen(function*() {
      const s = yield* stack({ chunkRows: 10, rowsPerSecond: 40, cancellingMs: 150 })
      yield* seedRequests(s.bqClient, 200)
      const created = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.out` } }))
      // wait for a few chunks
      yield* promise(async () => {
        for (let i = 0; i < 500; i++) {
          const j = await s.ai.batches.get({ name: created.name! })
          if (Number(j.completionStats?.successfulCount ?? 0) >= 20) return
          await new Promise((r) => setTimeout(r, 20))
        }
      })
      yield* promise(() => s.ai.batches.cancel({ name: created.name! }))
      const during = yield* promise(() => s.ai.batches.get({ name: created.name! }))
      assert.strictEqual(during.state, "JOB_STATE_CANCELLING")
      const { job } = yield* untilDone(s.ai, created.name!)
      assert.strictEqual(job.state, "JOB_STATE_CANCELLED")
      assert.strictEqual(job.error!.code, 1)
      const done = Number(job.completionStats!.successfulCount)
      assert.isAtLeast(done, 20)
      assert.isBelow(done, 200)
      assert.strictEqual(Number(job.completionStats!.incompleteCount), 200 - done)
      const [{ n }] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n FROM ds.out")
      assert.strictEqual(n, done)
      const again = yield* failure(() => s.ai.batches.cancel({ name: created.name! }))
      assert.strictEqual(again.status, 400)
      console.log(`vertex emulator cancel: CANCELLING → CANCELLED after ${done}/200 rows, kept in the output`)
    }).pipe(Effect.scoped))

  it.live("maxRunningJobs: a second job waits in JOB_STATE_QUEUED until the first ends; expiry ends a job EXPIRED with its rows so far", () =>
    Effect.gen(function*() {
      const s = yield* stack({ maxRunningJobs: 1, chunkRows: 10, rowsPerSecond: 100 })
      yield* seedRequests(s.bqClient, 40)
      const a = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds` } }))
      yield* Effect.sleep(60)
      const b = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds` } }))
      const bSeen = yield* untilDone(s.ai, b.name!)
      const aJob = yield* promise(() => s.ai.batches.get({ name: a.name! }))
      assert.strictEqual(aJob.state, "JOB_STATE_SUCCEEDED")
      assert.strictEqual(bSeen.seen[0], "JOB_STATE_QUEUED")
      assert.deepStrictEqual(bSeen.seen.slice(-2), ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"])
      assert.isTrue(Date.parse(bSeen.job.startTime!) >= Date.parse(aJob.endTime!), "b started after a ended")

      const e = yield* stack({ completionWindowMs: 400, chunkRows: 10, rowsPerSecond: 50 })
      yield* seedRequests(e.bqClient, 100)
      const x = yield* promise(() => e.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.out` } }))
      const { job } = yield* untilDone(e.ai, x.name!)
      assert.strictEqual(job.state, "JOB_STATE_EXPIRED")
      const done = Number(job.completionStats!.successfulCount)
      const [{ n }] = yield* rows(e.bqClient, "SELECT COUNT(*) AS n FROM ds.out")
      assert.isBelow(done, 100)
      assert.strictEqual(n, done)
      console.log(`vertex emulator queue: ${bSeen.seen.join(" → ")}; expiry after ${done}/100 rows`)
    }).pipe(Effect.scoped))

  it.live("state on disk: closed mid-job, served again on its folder, the job finishes with every row once", () =>
    Effect.gen(function*() {
      const vdir = tmpDir("vertex")
      const bqDir = tmpDir("bq")
      const gcsDir = tmpDir("gcs")
      const options = { dir: vdir, chunkRows: 25, rowsPerSecond: 250 }
      const { name, before } = yield* Effect.scoped(Effect.gen(function*() {
        const s = yield* stack(options, { bigquery: bqDir, gcs: gcsDir })
        yield* seedRequests(s.bqClient, 300)
        const job = yield* promise(() => s.ai.batches.create({ model: "gemini-2.5-flash", src: `bq://${PROJECT}.ds.input`, config: { dest: `bq://${PROJECT}.ds.out` } }))
        const before = yield* promise(async () => {
          for (let i = 0; i < 1_000; i++) {
            const j = await s.ai.batches.get({ name: job.name! })
            const done = Number(j.completionStats?.successfulCount ?? 0)
            if (done >= 75) return done
            await new Promise((r) => setTimeout(r, 5))
          }
          return -1
        })
        return { name: job.name!, before }
      }))
      assert.isAtLeast(before, 75)
      assert.isBelow(before, 300)
      const s = yield* stack(options, { bigquery: bqDir, gcs: gcsDir })
      const { job } = yield* untilDone(s.ai, name)
      assert.strictEqual(job.state, "JOB_STATE_SUCCEEDED")
      assert.deepStrictEqual(job.completionStats, { successfulCount: "300", failedCount: "0", incompleteCount: "0" })
      const [{ n, d }] = yield* rows(s.bqClient, "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM ds.out")
      assert.deepStrictEqual([n, d], [300, 300])
      console.log(`vertex emulator restart: closed after ${before}/300 rows, served again: ${n} rows, ${d} distinct ids`)
    }).pipe(Effect.scoped))

  it.live("create is validated as the API does: unknown fields, model names, labels, a Gemini embedding model over BigQuery", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      const post = (body: unknown) =>
        promise(async () => {
          const r = await fetch(`${s.vertex.url}/v1beta1/${jobsPath}`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } })
          return { status: r.status, body: (await r.json()) as any }
        })
      const base = {
        displayName: "x",
        model: "publishers/google/models/gemini-2.5-flash",
        inputConfig: { instancesFormat: "bigquery", bigquerySource: { inputUri: `bq://${PROJECT}.ds.t` } },
        outputConfig: { predictionsFormat: "bigquery", bigqueryDestination: { outputUri: `bq://${PROJECT}.ds` } }
      }
      const unknown = yield* post({ ...base, foo: 1 })
      assert.strictEqual(unknown.status, 400)
      assert.match(unknown.body.error.message, /Unknown name "foo"/)
      assert.strictEqual(unknown.body.error.status, "INVALID_ARGUMENT")
      const model = yield* post({ ...base, model: "gemini-2.5-flash" })
      assert.strictEqual(model.status, 400)
      const labels = yield* post({ ...base, labels: { Team: "x" } })
      assert.strictEqual(labels.status, 400)
      const emb = yield* post({ ...base, model: "publishers/google/models/gemini-embedding-001" })
      assert.strictEqual(emb.status, 400)
      assert.match(emb.body.error.message, /Cloud Storage/)
      const noDisplay = yield* post({ ...base, displayName: "" })
      assert.strictEqual(noDisplay.status, 400)
      console.log(`vertex emulator validation: ${[unknown, model, labels, emb, noDisplay].map((r) => r.status).join(", ")}`)
    }).pipe(Effect.scoped))

  it.live("synchronous calls through the SDK: generateContent, embedContent (Gemini embedding), predict (text embedding)", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      const text = yield* promise(() =>
        s.ai.models.generateContent({ model: "gemini-2.5-flash", contents: "a red toy car", config: { responseMimeType: "application/json", responseJsonSchema: SCHEMA } })
      )
      const want = Engine.chat({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "a red toy car" }], jsonSchema: SCHEMA })
      assert.strictEqual(text.text, want.text)
      const g = yield* promise(() => s.ai.models.embedContent({ model: "gemini-embedding-2", contents: "hello", config: { outputDimensionality: 24 } }))
      assert.strictEqual(g.embeddings![0]!.values!.length, 24)
      const t = yield* promise(() => s.ai.models.embedContent({ model: "text-embedding-005", contents: "hello", config: { outputDimensionality: 16 } }))
      assert.deepStrictEqual(t.embeddings![0]!.values, Engine.embed({ model: "text-embedding-005", input: "hello", dimensions: 16 }).vector)
      const stats = yield* s.vertex.stats
      assert.strictEqual(stats.requests["models.generateContent"], 1)
      assert.strictEqual(stats.requests["models.embedContent"], 2)
      console.log(`vertex emulator sync: generateContent ${JSON.stringify(text.text)}, embedContent 24 dims, predict 16 dims`)
    }).pipe(Effect.scoped))
})
