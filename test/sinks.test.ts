/**
 * The sink suite (test/support/sinks.ts) run against every sink: JSONL and
 * CSV part files, Postgres (a real server, OFFPEAK_TEST_PG_URL) and BigQuery
 * (its emulator, through the official client).
 */
import { BigQuery as Client } from "@google-cloud/bigquery"
import * as PartFiles from "@offpeak/core/PartFiles"
import { BigQuery, Emulator as BigQueryEmulator } from "@offpeak/io/bigquery"
import { Csv } from "@offpeak/io/csv"
import { Jsonl } from "@offpeak/io/jsonl"
import { Postgres } from "@offpeak/io/postgres"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as fs from "node:fs"
import * as path from "node:path"
import Papa from "papaparse"
import { connect, describePostgres, freshSchema } from "../packages/core/test/support/postgres.ts"
import { tmpDir } from "./support/files.ts"
import { closedPort, openScoped, type Row, sinkSuite } from "./support/sinks.ts"

/**
 * The rows of a part-file folder: the files its manifest lists, which must be exactly the part files there (a part
 * file outside the manifest, or a manifest entry without its file, fails the read).
 */
const partFileRows = async (dir: string, extension: string, parse: (text: string) => Array<Row>): Promise<Array<Row>> => {
  if (!fs.existsSync(dir)) return []
  const manifest = await PartFiles.readManifest(dir)
  const listed = manifest.map((p) => p.file).sort()
  const onDisk = fs.readdirSync(dir).filter((f) => f.startsWith("part-") && f.endsWith(`.${extension}`)).sort()
  if (JSON.stringify(listed) !== JSON.stringify(onDisk)) {
    throw new Error(`${dir}: the manifest lists ${listed.join(", ")} but the folder holds ${onDisk.join(", ")}`)
  }
  const out: Array<Row> = []
  for (const entry of manifest) {
    const held = parse(fs.readFileSync(path.join(dir, entry.file), "utf8"))
    if (held.length !== entry.rows) throw new Error(`${entry.file}: ${held.length} rows, the manifest says ${entry.rows}`)
    out.push(...held)
  }
  return out
}

/** a folder path that cannot be made: under a regular file */
const unwritableDir = () => {
  const file = path.join(tmpDir("sinks-down"), "not-a-folder")
  fs.writeFileSync(file, "")
  return path.join(file, "out")
}

sinkSuite("Jsonl.sink", async () => {
  const root = tmpDir("sinks-jsonl")
  return {
    sinkCase: {
      name: "Jsonl.sink",
      dispositions: ["replace", "append"],
      make: (target, disposition) =>
        Jsonl.sink<Row>({ dir: path.join(root, target), ...(disposition === undefined ? {} : { disposition: disposition as "replace" | "append" }) }),
      read: (target) =>
        partFileRows(path.join(root, target), "jsonl", (text) => text.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as Row)),
      // JSON has no bigint: JSON.stringify throws
      poison: (row) => ({ ...row, score: 10n as unknown as number }),
      down: () => Jsonl.sink<Row>({ dir: unwritableDir() })
    },
    close: async () => fs.rmSync(root, { recursive: true, force: true })
  }
})

sinkSuite("Csv.sink", async () => {
  const root = tmpDir("sinks-csv")
  return {
    sinkCase: {
      name: "Csv.sink",
      dispositions: ["replace", "append"],
      make: (target, disposition) =>
        Csv.sink<Row>({
          dir: path.join(root, target),
          columns: ["id", "label", "score"],
          ...(disposition === undefined ? {} : { disposition: disposition as "replace" | "append" })
        }),
      read: (target) =>
        partFileRows(path.join(root, target), "csv", (text) => {
          const parsed = Papa.parse<Record<string, string>>(text, { header: true, skipEmptyLines: true })
          if (parsed.errors.length > 0) throw new Error(`CSV: ${parsed.errors[0]!.message}`)
          return parsed.data.map((r) => ({ id: r.id!, label: r.label!, score: Number(r.score) }))
        }),
      // a date that is not one: its ISO text cannot be written
      poison: (row) => ({ ...row, label: new Date(Number.NaN) as unknown as string }),
      down: () => Csv.sink<Row>({ dir: unwritableDir(), columns: ["id", "label", "score"] })
    },
    close: async () => fs.rmSync(root, { recursive: true, force: true })
  }
})

describePostgres("sinks on Postgres", (pgUrl) => {
  sinkSuite("Postgres.sink", async () => {
    const schema = await openScoped(freshSchema(pgUrl, "sinks"))
    const { url } = schema.value
    const port = await closedPort()
    return {
      sinkCase: {
        name: "Postgres.sink",
        dispositions: ["merge"],
        make: (target, disposition) => {
          if (disposition !== undefined && disposition !== "merge") throw new Error(`Postgres.sink has no disposition ${disposition}`)
          return Postgres.sink<Row>({
            url,
            table: target,
            key: "id",
            createTable: { columns: { id: "text", label: "text NOT NULL", score: "double precision" } }
          })
        },
        read: (target) =>
          Effect.runPromise(Effect.scoped(Effect.gen(function*() {
            const sql = yield* connect(url)
            const [exists] = yield* sql.unsafe<{ t: string | null }>(`SELECT to_regclass('"${target}"')::text AS t`)
            if (exists!.t === null) return []
            const found = yield* sql.unsafe<{ id: string; label: string; score: number }>(`SELECT id, label, score FROM "${target}"`)
            return found.map((r) => ({ id: r.id, label: r.label, score: Number(r.score) }))
          }))),
        // the server refuses it: invalid input syntax for type double precision
        poison: (row) => ({ ...row, score: "a lot" as unknown as number }),
        poisonColumn: "score",
        down: () =>
          Postgres.sink<Row>({
            url: `postgres://postgres@127.0.0.1:${port}/postgres`,
            table: "t",
            key: "id",
            createTable: { columns: { id: "text", label: "text", score: "double precision" } }
          })
      },
      close: schema.close
    }
  })
})

sinkSuite("BigQuery.sink", async () => {
  const emulator = await openScoped(BigQueryEmulator.serve({}))
  const connection = { projectId: "sinks-proj", apiEndpoint: emulator.value.url }
  const client = new Client({ ...connection, authClient: new PassThroughClient() as never })
  await client.createDataset("ds")
  const port = await closedPort()
  const fields = [
    { name: "id", type: "STRING", mode: "REQUIRED" },
    { name: "label", type: "STRING", mode: "REQUIRED" },
    { name: "score", type: "FLOAT64", mode: "NULLABLE" }
  ]
  return {
    sinkCase: {
      name: "BigQuery.sink",
      dispositions: ["merge", "append", "replace"],
      make: (target, disposition) =>
        BigQuery.sink<Row>({
          table: `ds.${target}`,
          key: "id",
          schema: fields,
          connection,
          pollInterval: "10 millis",
          ...(disposition === undefined ? {} : { disposition })
        }),
      read: async (target) => {
        const [exists] = await client.dataset("ds").table(target).exists()
        if (!exists) return []
        const [found] = await client.query({ query: `SELECT id, label, score FROM ds.${target}` })
        return (found as Array<Row>).map((r) => ({ id: r.id, label: r.label, score: r.score }))
      },
      // a load job refuses it: Could not convert value to double
      poison: (row) => ({ ...row, score: "a lot" as unknown as number }),
      poisonColumn: "score",
      down: () => BigQuery.sink<Row>({ table: "ds.t", key: "id", schema: fields, connection: { projectId: "sinks-proj", apiEndpoint: `http://127.0.0.1:${port}` } })
    },
    close: emulator.close
  }
})
