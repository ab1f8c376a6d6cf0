/**
 * The BigQuery emulator, driven only through the official
 * `@google-cloud/bigquery` client (and `@google-cloud/storage` for loads from
 * Cloud Storage).
 */
import { BigQuery } from "@google-cloud/bigquery"
import { Storage } from "@google-cloud/storage"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import * as GcsEmulator from "../../gcs/Emulator.ts"
import * as Emulator from "../Emulator.ts"
import { clientOf, PROJECT, tmp, withEmulator } from "./support.ts"

const ALL_TYPES = [
  { name: "id", type: "INT64", mode: "REQUIRED" },
  { name: "big", type: "INT64" },
  { name: "f", type: "FLOAT64" },
  { name: "n", type: "NUMERIC" },
  { name: "bn", type: "BIGNUMERIC" },
  { name: "ok", type: "BOOL" },
  { name: "s", type: "STRING" },
  { name: "b", type: "BYTES" },
  { name: "ts", type: "TIMESTAMP" },
  { name: "d", type: "DATE" },
  { name: "dt", type: "DATETIME" },
  { name: "t", type: "TIME" },
  { name: "j", type: "JSON" },
  { name: "tags", type: "STRING", mode: "REPEATED" },
  {
    name: "rec",
    type: "RECORD",
    fields: [
      { name: "a", type: "INT64" },
      { name: "raw", type: "BYTES" },
      { name: "items", type: "RECORD", mode: "REPEATED", fields: [{ name: "k", type: "STRING" }, { name: "v", type: "FLOAT64" }] }
    ]
  }
]

describe("BigQuery emulator through @google-cloud/bigquery", () => {
  it("datasets and tables (nested and repeated fields); insertAll answers per-row errors and inserts nothing of a bad batch", async () => {
    await withEmulator({}, async (bq) => {
      const [ds] = await bq.createDataset("ds")
      await expect(bq.createDataset("ds")).rejects.toMatchObject({ code: 409 })
      const [table] = await ds.createTable("all_types", { schema: { fields: ALL_TYPES } })
      const [meta] = await table.getMetadata()
      expect(meta.schema.fields.map((f: { name: string; type: string; mode: string }) => `${f.name}:${f.type}:${f.mode}`)).toEqual([
        "id:INTEGER:REQUIRED", "big:INTEGER:NULLABLE", "f:FLOAT:NULLABLE", "n:NUMERIC:NULLABLE", "bn:BIGNUMERIC:NULLABLE",
        "ok:BOOLEAN:NULLABLE", "s:STRING:NULLABLE", "b:BYTES:NULLABLE", "ts:TIMESTAMP:NULLABLE", "d:DATE:NULLABLE",
        "dt:DATETIME:NULLABLE", "t:TIME:NULLABLE", "j:JSON:NULLABLE", "tags:STRING:REPEATED", "rec:RECORD:NULLABLE"
      ])
      expect(meta.schema.fields.at(-1).fields.at(-1)).toMatchObject({ name: "items", type: "RECORD", mode: "REPEATED" })
      const [tables] = await ds.getTables()
      expect(tables.map((t) => t.id)).toEqual(["all_types"])
      // one bad row (a string in an INT64 column): the whole request is refused, the others "stopped"
      const failed = await table.insert([{ id: 1 }, { id: "x" }, { id: 3 }], { raw: false }).then(() => undefined, (e: any) => e)
      expect(failed?.name).toBe("PartialFailureError")
      const errors = failed.errors as Array<{ row: unknown; errors: Array<{ reason: string; location?: string; message: string }> }>
      expect(errors.map((e) => e.errors[0]!.reason)).toEqual(["stopped", "invalid", "stopped"])
      expect(errors[1]!.errors[0]!.message).toBe("Could not convert value to integer. Field: id; Value: x")
      const [none] = await table.getRows()
      expect(none).toEqual([])
      await table.insert([{ id: 1, tags: ["a"] }, { id: 2, rec: { a: 5, items: [{ k: "x", v: 1.5 }] } }])
      const [rows] = await table.getRows()
      expect(rows.map((r: any) => r.id)).toEqual([1, 2])
      expect(rows[1].rec).toEqual({ a: 5, raw: null, items: [{ k: "x", v: 1.5 }] })
      await table.delete()
      await expect(table.getMetadata()).rejects.toMatchObject({ code: 404 })
      await ds.delete({ force: true })
    })
  })

  it("every type comes back as the client expects: int64 micros TIMESTAMPs, exact INT64 with wrapIntegers, NUMERIC, BYTES, JSON, ARRAY, STRUCT", async () => {
    await withEmulator({}, async (bq) => {
      const [ds] = await bq.createDataset("ds")
      const [table] = await ds.createTable("all_types", { schema: { fields: ALL_TYPES } })
      await table.insert([{
        id: 1,
        big: "9007199254740993",
        f: 1.25,
        n: "12345678901234567890.123456789",
        bn: "-0.000000001",
        ok: true,
        s: "héllo \"quoted\"",
        b: Buffer.from([0, 1, 254, 255]).toString("base64"),
        ts: "2024-03-04 05:06:07.123456 UTC",
        d: "2024-02-29",
        dt: "2024-03-04T05:06:07.5",
        t: "23:59:58.000001",
        j: JSON.stringify({ a: [1, { b: null }] }),
        tags: ["x", "y"],
        rec: { a: 7, raw: Buffer.from("hi").toString("base64"), items: [{ k: "k1", v: -0.5 }] }
      }])
      const [job] = await bq.createQueryJob({ query: "SELECT * FROM ds.all_types" })
      const [parsed] = await job.getQueryResults({ wrapIntegers: true })
      const row = parsed[0] as Record<string, any>
      expect(String(row.big.value)).toBe("9007199254740993")
      expect(row.f).toBe(1.25)
      expect(row.n.toString()).toBe("12345678901234567890.123456789")
      expect(row.bn.toString()).toBe("-1e-9")
      expect(row.ok).toBe(true)
      expect(row.s).toBe("héllo \"quoted\"")
      expect([...row.b]).toEqual([0, 1, 254, 255])
      expect(row.ts.value).toBe("2024-03-04T05:06:07.123456000Z")
      expect(row.d.value).toBe("2024-02-29")
      expect(row.dt.value).toBe("2024-03-04T05:06:07.500000")
      expect(row.t.value).toBe("23:59:58.000001")
      expect(JSON.parse(row.j)).toEqual({ a: [1, { b: null }] })
      expect(row.tags).toEqual(["x", "y"])
      expect(row.rec.a.value).toBe("7")
      expect(row.rec.raw.toString()).toBe("hi")
      expect(row.rec.items).toEqual([{ k: "k1", v: -0.5 }])
      // the wire: every scalar a string, TIMESTAMP int64 microseconds, RECORD { f }, REPEATED [{ v }]
      const [raw] = await job.getQueryResults({ skipParsing: true } as never) as unknown as [Array<{ f: Array<{ v: any }> }>]
      const cells = raw[0]!.f.map((c) => c.v)
      expect(cells.slice(0, 3)).toEqual(["1", "9007199254740993", "1.25"])
      expect(cells[8]).toBe("1709528767123456")
      expect(cells[13]).toEqual([{ v: "x" }, { v: "y" }])
      expect(cells[14]).toEqual({ f: [{ v: "7" }, { v: "aGk=" }, { v: [{ v: { f: [{ v: "k1" }, { v: "-0.5" }] } }] }] })
      // without wrapIntegers the client 9.3.0 silently rounds an INT64 it cannot hold as a number (why BigQuery.source refuses
      // such values unless asked for bigint or string)
      const [lossy] = await bq.query({ query: "SELECT big FROM ds.all_types" })
      expect(lossy).toEqual([{ big: 9007199254740992 }])
    })
  })

  it("queries with named parameters, served in pages (jobs.query, getQueryResults with maxResults / pageToken / startIndex, query streams)", async () => {
    await withEmulator({}, async (bq) => {
      await bq.createDataset("ds")
      await bq.query("CREATE TABLE ds.n AS SELECT x AS id, CONCAT('row ', CAST(x AS STRING)) AS label, MOD(x, 7) AS bucket, TIMESTAMP_SECONDS(1700000000 + x) AS at FROM UNNEST(GENERATE_ARRAY(1, 2345)) AS x")
      const [filtered] = await bq.query({
        query: "SELECT id FROM `test-proj.ds.n` WHERE id >= @min AND label LIKE @pattern AND bucket IN UNNEST(@buckets) AND at > @after AND @flag ORDER BY id",
        params: { min: 100, pattern: "row 1%", buckets: [0, 3], after: new Date(1700000000_000 + 150_000), flag: true }
      })
      const expected = Array.from({ length: 2345 }, (_, i) => i + 1).filter((x) => x > 150 && String(x).startsWith("1") && [0, 3].includes(x % 7))
      expect(filtered.map((r: any) => r.id)).toEqual(expected)
      // a struct parameter, and a null one with its type
      const [structured] = await bq.query({
        query: "SELECT @s.a AS a, @s.b AS b, @missing IS NULL AS isnull",
        params: { s: { a: 1, b: "two" }, missing: null },
        types: { missing: "STRING" }
      })
      expect(structured).toEqual([{ a: 1, b: "two", isnull: true }])

      const [job] = await bq.createQueryJob({ query: "SELECT id, label FROM ds.n ORDER BY id" })
      const seen: Array<number> = []
      let query: Record<string, unknown> | null = { maxResults: 500, autoPaginate: false }
      let pages = 0
      while (query !== null) {
        const [rows, next, response] = await job.getQueryResults(query) as unknown as [Array<{ id: number }>, Record<string, unknown> | null, { totalRows: string }]
        expect(response.totalRows).toBe("2345")
        seen.push(...rows.map((r) => r.id))
        pages++
        query = next
      }
      expect(pages).toBe(5)
      expect(seen).toEqual(Array.from({ length: 2345 }, (_, i) => i + 1))
      const [fromIndex] = await job.getQueryResults({ startIndex: "2340", maxResults: 10, autoPaginate: false } as never)
      expect(fromIndex.map((r: any) => r.id)).toEqual([2341, 2342, 2343, 2344, 2345])
      const streamed = await new Promise<number>((resolve, reject) => {
        let n = 0
        bq.createQueryStream({ query: "SELECT id FROM ds.n" }).on("data", () => n++).on("error", reject).on("end", () => resolve(n))
      })
      expect(streamed).toBe(2345)
      // tabledata.list in pages
      const [tableRows] = await bq.dataset("ds").table("n").getRows({ maxResults: 1000 })
      expect(tableRows).toHaveLength(1000)
      const [allRows] = await bq.dataset("ds").table("n").getRows()
      expect(allRows).toHaveLength(2345)
      console.log(`bigquery emulator: 2,345 rows read in ${pages} pages of 500 through getQueryResults; ${expected.length} rows matched 5 named parameters`)
    })
  })

  it("load jobs: a multipart upload under a job id; the same id again is 409 and loads nothing twice; a refused value names the row's byte position and the field", async () => {
    await withEmulator({}, async (bq) => {
      const [ds] = await bq.createDataset("ds")
      const dir = tmp("load")
      const file = path.join(dir, "rows.json")
      const lines = [{ id: 1, name: "a", emb: [0.5, 1] }, { id: 2, name: "b", emb: [] }, { id: 3, name: null, emb: [2] }]
      fs.writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n") + "\n")
      const table = ds.table("loaded")
      const metadata = {
        sourceFormat: "NEWLINE_DELIMITED_JSON",
        schema: { fields: [{ name: "id", type: "INT64", mode: "REQUIRED" }, { name: "name", type: "STRING" }, { name: "emb", type: "FLOAT64", mode: "REPEATED" }] },
        writeDisposition: "WRITE_APPEND"
      }
      const [job] = await table.createLoadJob(file, { ...metadata, jobId: "load_part_1" } as never)
      expect(job.id).toBe("load_part_1")
      const [done] = await job.promise().then(() => job.getMetadata())
      expect(done.status.state).toBe("DONE")
      expect(done.statistics.load.outputRows).toBe("3")
      const again = await table.createLoadJob(file, { ...metadata, jobId: "load_part_1" } as never).then(() => undefined, (e: any) => e)
      expect(again?.code).toBe(409)
      expect(again?.message).toMatch(/Already Exists: Job test-proj:US\.load_part_1/)
      const [rows] = await table.getRows()
      expect(rows.map((r: any) => r.id)).toEqual([1, 2, 3])
      expect(rows[0].emb).toEqual([0.5, 1])

      // a string in an INT64 column: the job fails, naming where the row starts and the field
      fs.writeFileSync(file, `{"id": 4, "name": "ok"}\n{"id": "four", "name": "bad"}\n`)
      const [badJob] = await table.createLoadJob(file, { ...metadata, jobId: "load_part_2" } as never)
      const failure = await badJob.promise().then(() => undefined, (e: any) => e)
      expect(failure?.message).toMatch(/too many errors/)
      const [badMeta] = await badJob.getMetadata()
      expect(badMeta.status.errorResult.reason).toBe("invalid")
      expect(badMeta.status.errors.map((e: any) => e.message)).toContainEqual(
        "Error while reading data, error message: JSON parsing error in row starting at position 24: Could not convert value to integer. Field: id; Value: four"
      )
      const [after] = await table.getRows()
      expect(after).toHaveLength(3)
      // WRITE_TRUNCATE replaces the rows
      fs.writeFileSync(file, `{"id": 9}\n`)
      const [truncate] = await table.createLoadJob(file, { ...metadata, writeDisposition: "WRITE_TRUNCATE" } as never)
      await truncate.promise()
      const [replaced] = await table.getRows()
      expect(replaced.map((r: any) => r.id)).toEqual([9])
    })
  })

  it("MERGE updates and inserts on the key; a target row matched by two source rows fails as in BigQuery; DML counts", async () => {
    await withEmulator({}, async (bq) => {
      await bq.createDataset("ds")
      await bq.query("CREATE TABLE ds.target (id INT64 NOT NULL, v STRING)")
      const [, , insert] = await bq.query("INSERT ds.target (id, v) VALUES (1, 'one'), (2, 'two')") as unknown as [unknown, unknown, { numDmlAffectedRows: string }]
      expect(insert.numDmlAffectedRows).toBe("2")
      await bq.query("CREATE TABLE ds.staging AS SELECT 2 AS id, 'TWO' AS v UNION ALL SELECT 3, 'three'")
      const [job] = await bq.createQueryJob({
        query: "MERGE `test-proj.ds.target` T USING `test-proj.ds.staging` S ON T.id = S.id WHEN MATCHED THEN UPDATE SET v = S.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (S.id, S.v)"
      })
      await job.promise()
      const [meta] = await job.getMetadata()
      expect(meta.statistics.query.statementType).toBe("MERGE")
      expect(meta.statistics.query.numDmlAffectedRows).toBe("2")
      const [rows] = await bq.query("SELECT id, v FROM ds.target ORDER BY id")
      expect(rows).toEqual([{ id: 1, v: "one" }, { id: 2, v: "TWO" }, { id: 3, v: "three" }])
      await bq.query("INSERT INTO ds.staging (id, v) VALUES (2, 'again')")
      await expect(bq.query("MERGE ds.target T USING ds.staging S ON T.id = S.id WHEN MATCHED THEN UPDATE SET v = S.v"))
        .rejects.toThrow("UPDATE/MERGE must match at most one source row for each target row")
      const [unchanged] = await bq.query("SELECT v FROM ds.target WHERE id = 2")
      expect(unchanged).toEqual([{ v: "TWO" }])
    })
  })

  it("GoogleSQL outside the supported subset fails with invalidQuery naming the construct, never a different answer", async () => {
    await withEmulator({}, async (bq) => {
      await bq.createDataset("ds")
      const refused = async (query: string) => bq.query({ query }).then(() => "answered", (e: any) => `${e.code} ${e.errors?.[0]?.reason}: ${e.message}`)
      expect(await refused("SELECT FORMAT('%d', 1)")).toMatch(/^400 invalidQuery: the function FORMAT\(\) is not supported by the emulator/)
      expect(await refused("SELECT * FROM ds.t FOR SYSTEM_TIME AS OF CURRENT_TIMESTAMP()")).toMatch(/FOR SYSTEM_TIME AS OF \(time travel\) is not supported/)
      expect(await refused("SELECT ?")).toMatch(/positional query parameters/)
      expect(await refused("DECLARE x INT64")).toMatch(/DECLARE.*not supported by the emulator/)
      expect(await refused("SELECT @nope")).toMatch(/Query parameter 'nope' not found/)
      expect(await refused("SELECT * FROM ds.missing")).toMatch(/^404 notFound: Not found: Table/)
      // what is translated answers as BigQuery does
      const [rows] = await bq.query(
        "SELECT 7 / 2 AS d, CONCAT('a', NULL) AS c, [10, 20, 30][OFFSET(1)] AS o, [10, 20][SAFE_OFFSET(5)] AS so, EXTRACT(DAYOFWEEK FROM DATE '2024-03-03') AS dow, " +
          "TIMESTAMP_DIFF(TIMESTAMP '2024-01-01 02:10:00 UTC', TIMESTAMP '2024-01-01 01:30:00 UTC', HOUR) AS h, GREATEST(1, NULL) AS g, REGEXP_EXTRACT('abc123', r'[a-z]+(\\d+)') AS re"
      )
      expect(rows).toEqual([{ d: 3.5, c: null, o: 20, so: null, dow: 1, h: 0, g: null, re: "123" }])
    })
  })

  it("faults: 429 and 500 on endpoints are retried by the client; a job that fails; a slow job is polled to DONE; a jobs.insert that creates then answers 500", async () => {
    await withEmulator(
      {
        endpointFaults: [{ endpoint: "jobs.getQueryResults", status: 500, times: 1 }, { endpoint: "tables.get", status: 429, times: 1 }],
        failJobs: { kind: "load", times: 1, reason: "backendError" },
        jobDelayMs: 300,
        jobInsertSucceedsThenFails: 1
      },
      async (bq, emulator) => {
        // the first jobs.insert creates its job and answers 500: the client retries, gets 409 for its own id... for a random id
        // the client reads the job it made instead (createJob's documented behaviour)
        const started = Date.now()
        const [job] = await bq.createQueryJob({ query: "SELECT 1 AS x" })
        const [rows] = await job.getQueryResults()
        expect(rows).toEqual([{ x: 1 }])
        const [ds] = await bq.createDataset("ds")
        const [table] = await ds.createTable("t", { schema: { fields: [{ name: "x", type: "INT64" }] } })
        const [meta] = await table.getMetadata() // answered 429 first
        expect(meta.tableReference.tableId).toBe("t")
        const file = path.join(tmp("faults"), "x.json")
        fs.writeFileSync(file, "{\"x\": 1}\n")
        const [load] = await table.createLoadJob(file, { sourceFormat: "NEWLINE_DELIMITED_JSON" } as never)
        const failure = await load.promise().then(() => undefined, (e: any) => e)
        expect(failure?.errors?.[0]?.reason).toBe("backendError")
        const stats = await Effect.runPromise(emulator.stats)
        expect(stats.requests["jobs.getQueryResults"]).toBeGreaterThanOrEqual(2)
        expect(stats.requests["jobs.insert"]).toBeGreaterThanOrEqual(2)
        console.log(`bigquery faults: a 500, a 429, an insert answered 500 after creating, 300 ms jobs: handled in ${Date.now() - started} ms; requests ${JSON.stringify(stats.requests)}`)
      }
    )
  }, 60_000)

  it("state on disk: a job running when the emulator's process is SIGKILLed runs when a new emulator opens the folder", async () => {
    const dir = tmp("kill")
    const child = spawn(process.execPath, [path.join(import.meta.dirname, "fixtures/serve.ts"), JSON.stringify({ dir, jobDelayMs: 1_500 })], { stdio: ["ignore", "pipe", "inherit"] })
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => resolve(d.toString().trim()))
      child.on("exit", (code) => reject(new Error(`the emulator exited with ${code}`)))
    })
    const bq = clientOf(url)
    await bq.createDataset("ds")
    await bq.query("CREATE TABLE ds.t AS SELECT 1 AS id").catch(() => undefined) // runs after 1.5 s; answered later
    const [job] = await bq.createQueryJob({ query: "INSERT INTO ds.t (id) SELECT x FROM UNNEST(GENERATE_ARRAY(2, 1000)) AS x", jobId: "survivor" })
    expect((await job.getMetadata())[0].status.state).toBe("RUNNING")
    child.kill("SIGKILL")
    await new Promise((resolve) => child.on("exit", resolve))
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ dir })
      const again = clientOf(emulator.url)
      const [done] = yield* Effect.promise(() => again.job("survivor").promise().then(() => again.job("survivor").getMetadata()))
      expect(done.status.state).toBe("DONE")
      expect(done.statistics.query.numDmlAffectedRows).toBe("999")
      const [rows] = yield* Effect.promise(() => again.query("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM ds.t"))
      expect(rows).toEqual([{ n: 1000, d: 1000 }])
    })))
  }, 60_000)

  it("BIGQUERY_EMULATOR_HOST: paths without /bigquery/v2 are served the same", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* Emulator.serve({})
      const before = process.env.BIGQUERY_EMULATOR_HOST
      process.env.BIGQUERY_EMULATOR_HOST = emulator.url
      try {
        const bq = new BigQuery({ projectId: PROJECT, authClient: new PassThroughClient() })
        const [rows] = yield* Effect.promise(() => bq.query({ query: "SELECT @x + 1 AS y", params: { x: 41 } }))
        expect(rows).toEqual([{ y: 42 }])
      } finally {
        if (before === undefined) delete process.env.BIGQUERY_EMULATOR_HOST
        else process.env.BIGQUERY_EMULATOR_HOST = before
      }
    })))
  })

  it("loads from gs:// URIs of the Cloud Storage emulator", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const gcs = yield* GcsEmulator.serve({})
      const storage = new Storage({ projectId: PROJECT, apiEndpoint: gcs.url })
      yield* Effect.promise(async () => {
        await storage.createBucket("staging")
        await storage.bucket("staging").file("parts/a.jsonl").save(`{"id": 1}\n{"id": 2}\n`)
        await storage.bucket("staging").file("parts/b.jsonl").save(`{"id": 3}\n`)
      })
      const emulator = yield* Emulator.serve({ gcsDir: gcs.dir })
      const bq = clientOf(emulator.url)
      const rows = yield* Effect.promise(async () => {
        const [ds] = await bq.createDataset("ds")
        const [job] = await bq.createJob({
          configuration: {
            load: {
              sourceUris: ["gs://staging/parts/*.jsonl"],
              sourceFormat: "NEWLINE_DELIMITED_JSON",
              destinationTable: { projectId: PROJECT, datasetId: "ds", tableId: "from_gcs" },
              schema: { fields: [{ name: "id", type: "INT64" }] }
            }
          }
        })
        await job.promise()
        const [rows] = await ds.table("from_gcs").getRows()
        return rows
      })
      expect(rows.map((r: any) => r.id).sort()).toEqual([1, 2, 3])
    })))
  })
})
