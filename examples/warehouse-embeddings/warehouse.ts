/**
 * Where the warehouse example's tables live, chosen from the environment:
 *
 * - `BIGQUERY_EMULATOR_HOST` set (a URL, `http://127.0.0.1:9050`): a BigQuery
 *   emulator already running there (project `GOOGLE_CLOUD_PROJECT`, else
 *   `offpeak-local`); the documents table is seeded when it is missing.
 * - else `GOOGLE_APPLICATION_CREDENTIALS` or `GOOGLE_CLOUD_PROJECT` set:
 *   BigQuery itself (Google's application default credentials); your
 *   `<dataset>.documents (id INT64, title STRING, body STRING, updated_at
 *   TIMESTAMP)` table is read as it is, nothing is seeded.
 * - else (the embedded default): the local BigQuery emulator (DuckDB) starts
 *   in this process with its state in
 *   `.offpeak/examples/warehouse-embeddings/bigquery/`, and the documents
 *   table is seeded once with `WAREHOUSE_DOCUMENTS` (default 2,000) sample
 *   documents.
 *
 * The dataset is `WAREHOUSE_DATASET` (default `warehouse`).
 */
import { BigQuery as Client } from "@google-cloud/bigquery"
import type { BigQuery } from "@offpeak/io/bigquery"
import { Emulator } from "@offpeak/io/bigquery"
import { Effect, Exit, Scope } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Documents from "./documents.ts"

/** the example's local state (the embedded emulator's DuckDB files) */
export const STATE = path.resolve(".offpeak/examples/warehouse-embeddings")

/** the dataset of both tables */
export const DATASET = process.env.WAREHOUSE_DATASET || "warehouse"

/** the source table: one row per document */
export const DOCUMENTS = `${DATASET}.documents`

/** the target table: one row per document, its embedding */
export const EMBEDDINGS = `${DATASET}.document_embeddings`

/** the project of the emulators */
export const LOCAL_PROJECT = "offpeak-local"

/** how the example reaches BigQuery */
export interface Warehouse {
  readonly connection: BigQuery.Connection
  /** the official client on the same connection (seeding, edits, checks) */
  readonly client: Client
  /** `local` (in-process emulator), `emulator` (`BIGQUERY_EMULATOR_HOST`) or `bigquery` */
  readonly kind: "local" | "emulator" | "bigquery"
  /** one line saying where the tables are */
  readonly where: string
  /** stops the in-process emulator (closing its DuckDB files); nothing for the others */
  readonly close: () => Promise<void>
}

const env = (name: string) => {
  const value = process.env[name]
  return value === undefined || value.trim() === "" ? undefined : value.trim()
}

/** starts the emulator in this process on the example's folder, until `close` (or the process ends) */
const serveLocal = async (): Promise<{ readonly url: string; readonly dir: string; readonly close: () => Promise<void> }> => {
  const dir = path.join(STATE, "bigquery")
  const scope = Scope.makeUnsafe()
  const handle = await Effect.runPromise(Emulator.serve({ dir }).pipe(Scope.provide(scope))).catch((e: unknown) => {
    const text = e instanceof Error ? e.message : String(e)
    throw new Error(
      /lock/i.test(text)
        ? `the local BigQuery emulator's files in ${dir} are in use by another process (a run of this example?): ${text}`
        : text
    )
  })
  return { url: handle.url, dir: handle.dir, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/**
 * Creates the dataset and loads `count` sample documents into the documents
 * table when the table is not there (one load job: the table appears whole or
 * not at all, so a crash while seeding seeds again next time). Returns the
 * number loaded, 0 when the table was there.
 */
export const seed = async (client: Client, count: number): Promise<number> => {
  const dataset = client.dataset(DATASET)
  const [hasDataset] = await dataset.exists()
  if (!hasDataset) {
    await dataset.create().catch((e: { code?: number }) => {
      if (e.code !== 409) throw e
    })
  }
  const table = dataset.table("documents")
  const [hasTable] = await table.exists()
  if (hasTable) return 0
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-warehouse-seed-"))
  try {
    const file = path.join(folder, "documents.json")
    fs.writeFileSync(file, Documents.generate(count).map((d) => JSON.stringify(d)).join("\n") + "\n")
    await table.load(file, {
      sourceFormat: "NEWLINE_DELIMITED_JSON",
      schema: { fields: Documents.FIELDS.map((f) => ({ ...f })) },
      writeDisposition: "WRITE_TRUNCATE",
      createDisposition: "CREATE_IF_NEEDED"
    } as never)
  } finally {
    fs.rmSync(folder, { recursive: true, force: true })
  }
  return count
}

/** the number of sample documents a fresh table gets (`WAREHOUSE_DOCUMENTS`, default 2,000) */
export const seedCount = (): number => {
  const raw = env("WAREHOUSE_DOCUMENTS")
  const n = raw === undefined ? 2_000 : Number(raw)
  if (!Number.isInteger(n) || n < 1) throw new Error(`WAREHOUSE_DOCUMENTS must be a positive integer, got ${JSON.stringify(raw)}`)
  return n
}

/** connects as the environment says (see the module documentation), seeding the documents of an emulator */
export const open = async (): Promise<Warehouse> => {
  const emulatorHost = env("BIGQUERY_EMULATOR_HOST")
  if (emulatorHost !== undefined) {
    // the official client takes the variable as its base URL, as it is: a host without a scheme is not one
    if (!/^https?:\/\//.test(emulatorHost)) {
      throw new Error(`BIGQUERY_EMULATOR_HOST must be a URL with its scheme, e.g. http://127.0.0.1:9050 (got ${JSON.stringify(emulatorHost)})`)
    }
    const url = emulatorHost.replace(/\/+$/, "")
    const projectId = env("GOOGLE_CLOUD_PROJECT") ?? LOCAL_PROJECT
    const client = new Client({ projectId, apiEndpoint: url, authClient: new PassThroughClient() as never })
    const seeded = await seed(client, seedCount())
    return {
      connection: { projectId, apiEndpoint: url },
      client,
      kind: "emulator",
      where: `the BigQuery emulator at ${url} (project ${projectId})${seeded > 0 ? `; seeded ${DOCUMENTS} with ${seeded} documents` : ""}`,
      close: async () => {}
    }
  }
  if (env("GOOGLE_APPLICATION_CREDENTIALS") !== undefined || env("GOOGLE_CLOUD_PROJECT") !== undefined) {
    const projectId = env("GOOGLE_CLOUD_PROJECT")
    const client = new Client(projectId === undefined ? {} : { projectId })
    return {
      connection: projectId === undefined ? {} : { projectId },
      client,
      kind: "bigquery",
      where: `BigQuery${projectId === undefined ? "" : ` in project ${projectId}`}`,
      close: async () => {}
    }
  }
  const local = await serveLocal()
  const client = new Client({ projectId: LOCAL_PROJECT, apiEndpoint: local.url, authClient: new PassThroughClient() as never })
  let seeded: number
  try {
    seeded = await seed(client, seedCount())
  } catch (e) {
    await local.close()
    throw e
  }
  return {
    connection: { projectId: LOCAL_PROJECT, apiEndpoint: local.url },
    client,
    kind: "local",
    where: `no BIGQUERY_EMULATOR_HOST or Google credentials: the local BigQuery emulator at ${local.url} (state in ${local.dir})` +
      (seeded > 0 ? `; seeded ${DOCUMENTS} with ${seeded} documents` : ""),
    close: local.close
  }
}
