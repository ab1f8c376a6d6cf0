/**
 * Test helpers for Vertex: the Cloud Storage, BigQuery and Vertex emulators
 * served together (Vertex reading and writing the other two), and the
 * official clients pointed at them without credentials.
 */
import { BigQuery } from "@google-cloud/bigquery"
import { Storage } from "@google-cloud/storage"
import { GoogleGenAI } from "@google/genai"
import { Emulator as BigQueryEmulator } from "@offpeak/io/bigquery"
import { Emulator as GcsEmulator } from "@offpeak/io/gcs"
import { Effect } from "effect"
import { PassThroughClient } from "google-auth-library"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as VertexEmulator from "../VertexEmulator.ts"

export const PROJECT = "test-proj"
export const LOCATION = "us-central1"

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-vertex-${prefix}-`))

/** `@google/genai` in Vertex mode against `url`, sending no credentials */
export const genai = (url: string) =>
  new GoogleGenAI({
    vertexai: true,
    project: PROJECT,
    location: LOCATION,
    httpOptions: { baseUrl: url },
    googleAuthOptions: { authClient: new PassThroughClient() as never }
  })

export const bigquery = (url: string) => new BigQuery({ projectId: PROJECT, apiEndpoint: url, authClient: new PassThroughClient() })

export const storage = (url: string) =>
  new Storage({ projectId: PROJECT, apiEndpoint: url, retryOptions: { retryDelayMultiplier: 1.01, maxRetries: 3, totalTimeout: 60 } })

/** the three emulators, Vertex wired to the other two; closed with the scope */
export const stack = (
  options: VertexEmulator.Options = {},
  dirs: { readonly bigquery?: string; readonly gcs?: string } = {},
  gcsOptions: GcsEmulator.Options = {}
) =>
  Effect.gen(function*() {
    const gcs = yield* GcsEmulator.serve({ ...gcsOptions, ...(dirs.gcs !== undefined ? { dir: dirs.gcs } : {}) })
    const bq = yield* BigQueryEmulator.serve(dirs.bigquery !== undefined ? { dir: dirs.bigquery } : {})
    const vertex = yield* VertexEmulator.serve({ bigqueryUrl: bq.url, storageUrl: gcs.url, ...options })
    return { gcs, bq, vertex, ai: genai(vertex.url), bqClient: bigquery(bq.url), storage: storage(gcs.url) }
  })

export const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

const TERMINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"])

/** polls a job with the SDK until it ends; the states seen on the way */
export const untilDone = (ai: GoogleGenAI, name: string, everyMs = 10) =>
  promise(async () => {
    const seen: Array<string> = []
    for (let i = 0; i < 20_000; i++) {
      const job = await ai.batches.get({ name })
      if (seen.at(-1) !== job.state) seen.push(job.state!)
      if (TERMINAL.has(job.state!)) return { job, seen }
      await new Promise((r) => setTimeout(r, everyMs))
    }
    throw new Error(`job ${name} did not end`)
  })

/** a `GenerateContentRequest` as a BigQuery `request` column's JSON */
export const requestJson = (text: string, schema?: unknown) =>
  JSON.stringify({
    contents: [{ role: "user", parts: [{ text }] }],
    ...(schema !== undefined ? { generationConfig: { responseMimeType: "application/json", responseJsonSchema: schema } } : {})
  })

/** rows of a query, parsed by the client */
export const rows = (bq: BigQuery, query: string, params?: Record<string, unknown>) =>
  promise(async () => (await bq.query({ query, ...(params !== undefined ? { params } : {}) }))[0] as Array<Record<string, any>>)
