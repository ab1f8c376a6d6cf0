/**
 * A BigQuery table or query as the input of a provider's batch job over a
 * table (Vertex AI batch prediction from BigQuery): the request of every row
 * is built by BigQuery itself, the job reads and writes tables, and the
 * answers land in a target table by a MERGE — no row passes through offpeak.
 * It implements `Source.Pushdown` on the official `@google-cloud/bigquery`.
 *
 * **The request**, defined once and typed ({@link chat}, {@link embedding}),
 * is rendered as a GoogleSQL expression over the source's columns:
 *
 * - chat (Gemini models): a `request` column of JSON, a
 *   `GenerateContentRequest` — `contents` with one user turn whose text is
 *   the `prompt` expression, `systemInstruction`, `generationConfig`
 *   (`maxOutputTokens`, `temperature`, `topP`, `stopSequences`, `seed`, and
 *   with an `output` schema `responseMimeType: application/json` and
 *   `responseJsonSchema`). The constant parts go to BigQuery as query
 *   parameters, never pasted into the text: `PARSE_JSON(CONCAT(@head,
 *   TO_JSON_STRING(CAST((prompt) AS STRING)), @tail))`.
 * - embedding (text-embedding models): a `content` column, the `input`
 *   expression.
 *
 * **A job's tables**, named from its batch id (`offpeak_<hash>_in`,
 * `offpeak_<hash>_out` in `dataset`):
 *
 * - `stage` runs `CREATE OR REPLACE TABLE …_in AS SELECT <keys>, <request>
 *   FROM (<source>)` as a query job whose id comes from the batch id: staging
 *   again (a crash, a resume) finds that job (BigQuery refuses a second job
 *   with an id) instead of replacing a table a running job reads. A retry
 *   (`retryOf`) stages the earlier job's input rows whose key has no good
 *   answer in its output — the same requests, not read again from the source.
 *   A key that is NULL or held by two rows fails the stage (`SourceError`
 *   naming it): a job's answers are joined on the key. The output table is
 *   only named: the job creates it (it must not exist).
 * - A row **succeeded** when its output row has an empty `status`, a
 *   response that ended `STOP`, whose text parses as a JSON object and whose
 *   fields decode with the output schema: each field's JSON type (string,
 *   integer, number, boolean; anything else is kept as JSON), its literal
 *   values (`Schema.Literals`), and its presence unless optional. Refinements
 *   beyond these (lengths, ranges, patterns) are not checked server-side.
 *   Every other row **failed**, with the reason: no answer (the job ended
 *   first), the job's `status`, an answer cut short (`finishReason`), not
 *   JSON, or the field at fault (`field "category": expected one of "toys",
 *   "food", got "cars"`).
 * - `tally` counts both; `failures` streams the failed rows (key, reason, the
 *   status or answer text); `land` MERGEs the decoded values of the
 *   succeeded rows into `target` on the key (creating it, keys typed as in
 *   the source, output fields NULLABLE) as a query job whose id comes from the
 *   job's tables: landing twice runs it once. A job that wrote no output
 *   table (cancelled or failed before it started) has every row failed with
 *   no answer.
 * - Output columns read: the pass-through keys, `status`, and `response`
 *   (chat: the first candidate's first text part and its `finishReason`) or
 *   `predictions` (embeddings: `$[0].embeddings.values`, read as JSON text —
 *   the column's type in Vertex's output is not verified).
 * - Queries wait for their jobs by long polls of `jobs.getQueryResults` with
 *   no rows: a few small answers however long a job over a million rows runs.
 *
 * **Parsing answers**: BigQuery's `SAFE.PARSE_JSON` is used when the engine
 * has it (BigQuery does; probed once with a one-row query). An engine without
 * it (the local emulator today) gets `PARSE_JSON` guarded by a shape check
 * (`{…}`): a text that looks like an object but is not JSON then fails the
 * query that reads it.
 *
 * @since 0.1.0
 */
import { BigQuery as Client } from "@google-cloud/bigquery"
import type { Job } from "@google-cloud/bigquery"
import type * as Source from "@offpeak/core/Source"
import { SourceError } from "@offpeak/core/Source"
import { Duration, Effect, Option, Schema, Stream } from "effect"
import * as crypto from "node:crypto"
import * as BqClient from "./internal/client.ts"
import * as Sql from "./internal/pushdownSql.ts"

// ===== Requests =====

/**
 * A chat request rendered server-side: `prompt` is a GoogleSQL expression over
 * the source's columns (values in `params` as `@name`); the rest are
 * constants.
 *
 * @since 0.1.0
 * @category models
 */
export interface Chat {
  readonly _tag: "Chat"
  readonly model: string
  readonly system?: string | undefined
  /** a GoogleSQL expression of type STRING, e.g. `CONCAT('Classify: ', title, '\n', description)` */
  readonly prompt: string
  readonly maxTokens?: number | undefined
  readonly temperature?: number | undefined
  readonly topP?: number | undefined
  readonly stop?: ReadonlyArray<string> | undefined
  readonly seed?: number | undefined
  /** the answer's schema (a struct): sent as `responseJsonSchema`, checked and landed field by field */
  readonly output?: { readonly name: string; readonly schema: Schema.Top } | undefined
}

/**
 * An embedding request rendered server-side: `input` is a GoogleSQL
 * expression over the source's columns (text-embedding models).
 *
 * @since 0.1.0
 * @category models
 */
export interface Embedding {
  readonly _tag: "Embedding"
  readonly model: string
  readonly input: string
}

/**
 * A request of a pushed-down job.
 *
 * @since 0.1.0
 * @category models
 */
export type Request = Chat | Embedding

/**
 * A chat request whose prompt is a SQL expression.
 *
 * @example
 * ```ts
 * Pushdown.chat({
 *   model: "gemini-2.5-flash",
 *   system: "Classify the product.",
 *   prompt: "CONCAT(title, '\\n', description)",
 *   output: { name: "Classification", schema: Classification }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const chat = (options: Omit<Chat, "_tag">): Chat => ({ _tag: "Chat", ...options })

/**
 * An embedding request whose input is a SQL expression.
 *
 * @since 0.1.0
 * @category constructors
 */
export const embedding = (options: Omit<Embedding, "_tag">): Embedding => ({ _tag: "Embedding", ...options })

// ===== Options =====

/**
 * Options of {@link pushdown}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** a table (`dataset.table` or `project.dataset.table`), or a query with named parameters */
  readonly source:
    | { readonly table: string }
    | {
      readonly query: string
      /** named parameters (`@name`) of the query and of the request's expressions */
      readonly params?: Readonly<Record<string, unknown>> | undefined
      /** BigQuery types of parameters a value cannot tell (`null`, `[]`) */
      readonly types?: Readonly<Record<string, unknown>> | undefined
    }
  /** the key column(s): they pass through the job and join each answer to its row */
  readonly key: string | ReadonlyArray<string>
  readonly request: Request
  /** where answers land: a table (created when missing) and, for embeddings, the column of the vector (JSON, default `embedding`) */
  readonly target: { readonly table: string; readonly embeddingColumn?: string | undefined }
  /** the dataset of the jobs' input and output tables (`dataset` or `project.dataset`; created when missing) */
  readonly dataset: string
  readonly connection?: BqClient.Connection | undefined
  /** the first wait between two looks at a running query job (default 100 ms, growing to 2 s) */
  readonly pollInterval?: Duration.Input | undefined
  /** the name in messages, by default the target table */
  readonly name?: string | undefined
}

/**
 * A BigQuery pushdown: `Source.Pushdown` and what it renders.
 *
 * @since 0.1.0
 * @category models
 */
export interface BigQueryPushdown extends Source.Pushdown {
  readonly name: string
  /** the GoogleSQL expression of the `request` (chat) or `content` (embedding) column */
  readonly requestSql: string
  /** its constant parts, as named parameters */
  readonly requestParams: Readonly<Record<string, string>>
}

// ===== Constructors =====

const ATTEMPTS = 4
const TRANSIENT = new Set(["backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError", "stopped", "quotaExceeded"])

const hashOf = (text: string) => crypto.createHash("sha256").update(text).digest("hex").slice(0, 16)

/** the `GenerateContentRequest` around the prompt: the JSON before and after its text */
const chatTemplate = (r: Chat, jsonSchema: unknown): { readonly head: string; readonly tail: string } => {
  const generationConfig: Record<string, unknown> = {}
  if (r.temperature !== undefined) generationConfig.temperature = r.temperature
  if (r.topP !== undefined) generationConfig.topP = r.topP
  if (r.maxTokens !== undefined) generationConfig.maxOutputTokens = r.maxTokens
  if (r.stop !== undefined && r.stop.length > 0) generationConfig.stopSequences = [...r.stop]
  if (r.seed !== undefined) generationConfig.seed = r.seed
  if (jsonSchema !== undefined) {
    generationConfig.responseMimeType = "application/json"
    generationConfig.responseJsonSchema = jsonSchema
  }
  const system = r.system === undefined ? "" : `,"systemInstruction":${JSON.stringify({ parts: [{ text: r.system }] })}`
  return {
    head: "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":",
    tail: `}]}]${system},"generationConfig":${JSON.stringify(generationConfig)}}`
  }
}

interface QueryParameter {
  readonly name: string
  readonly parameterType: unknown
  readonly parameterValue: unknown
}

/**
 * A pushdown of `source` through `request` into `target` (see the module documentation).
 *
 * @example
 * ```ts
 * import { BigQuery, Pushdown } from "@offpeak/io/bigquery"
 *
 * const pushdown = BigQuery.pushdown({
 *   source: { table: "shop.products" },
 *   key: "id",
 *   request: Pushdown.chat({ model: "gemini-2.5-flash", prompt: "description", output: { name: "Label", schema: Label } }),
 *   target: { table: "shop.labels" },
 *   dataset: "offpeak_staging"
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const pushdown = (options: Options): BigQueryPushdown => {
  const keys: ReadonlyArray<string> = typeof options.key === "string" ? [options.key] : [...options.key]
  const name = options.name ?? options.target.table
  const request = options.request
  const embeddingColumn = options.target.embeddingColumn ?? "embedding"
  const firstPoll = Duration.toMillis(Duration.fromInputUnsafe(options.pollInterval ?? "100 millis"))
  const sourceError = (message: string) => new SourceError({ source: name, message: `${name}: ${message}` })

  let columns: ReadonlyArray<Sql.Column> = []
  let jsonSchema: unknown = undefined
  let problem: string | undefined = keys.length === 0
    ? "no key column"
    : keys.map((k) => BqClient.columnProblem(k)).find((p) => p !== undefined)
  if (problem === undefined && request._tag === "Chat" && request.output !== undefined) {
    const cs = Sql.columnsOf(request.output.schema)
    if (typeof cs === "string") problem = `the output schema cannot be decoded in BigQuery: ${cs}`
    else {
      columns = cs
      const clash = cs.find((c) => keys.some((k) => k.toLowerCase() === c.name.toLowerCase()))
      if (clash !== undefined) problem = `the output field ${JSON.stringify(clash.name)} has the name of a key column`
      else {
        try {
          jsonSchema = Sql.responseJsonSchema(request.output.schema)
        } catch (e) {
          problem = `the output schema has no JSON Schema: ${e instanceof Error ? e.message : String(e)}`
        }
      }
    }
  }
  if (problem === undefined && request._tag === "Chat" && request.output === undefined) {
    problem = "a pushed-down chat needs an output schema: the answers land as its fields"
  }
  if (problem === undefined && request._tag === "Embedding" && BqClient.columnProblem(embeddingColumn) !== undefined) {
    problem = `embeddingColumn: ${BqClient.columnProblem(embeddingColumn)}`
  }
  if (problem === undefined && "params" in options.source && Object.keys(options.source.params ?? {}).some((k) => k.startsWith("__offpeak"))) {
    problem = "parameter names starting with __offpeak are reserved"
  }

  const template = request._tag === "Chat" ? chatTemplate(request, jsonSchema) : undefined
  const requestSql = request._tag === "Chat"
    ? `PARSE_JSON(CONCAT(@__offpeak_head, TO_JSON_STRING(CAST((${request.prompt}) AS STRING)), @__offpeak_tail))`
    : `CAST((${request.input}) AS STRING)`
  const requestParams: Record<string, string> = template === undefined ? {} : { __offpeak_head: template.head, __offpeak_tail: template.tail }
  const requestColumn = request._tag === "Chat" ? "request" : "content"

  // ----- the client -----

  let cached: { readonly client: Client; readonly location: string | undefined } | undefined
  const client = Effect.suspend(() =>
    cached !== undefined ? Effect.succeed(cached) : Effect.map(BqClient.resolve(options.connection), (c) => {
      cached = { client: BqClient.make(c), location: c.location }
      return cached
    })
  )

  const call = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, SourceError> =>
    Effect.tryPromise({ try: f, catch: (e) => sourceError(`${what}: ${BqClient.describe(e)}`) })

  const parameters = (params: Readonly<Record<string, unknown>>, types?: Readonly<Record<string, unknown>>): Array<QueryParameter> =>
    Object.entries(params).map(([paramName, value]) => ({
      ...(Client as unknown as { valueToQueryParameter_: (v: unknown, t?: unknown) => QueryParameter }).valueToQueryParameter_(value, types?.[paramName]),
      name: paramName
    }))

  const userParams = "params" in options.source ? options.source.params ?? {} : {}
  const userTypes = "types" in options.source ? options.source.types : undefined

  /**
   * Waits until a query job is done by long polls of `jobs.getQueryResults` with no rows (`maxResults=0`,
   * `timeoutMs`): a few small answers however long the job runs (`jobs.get` would echo the whole job, its SQL
   * included, at every look). A job that failed answers an error: its `errorResult` is then read once.
   */
  const waitDone = (bq: Client, job: Job, location: string | undefined) =>
    Effect.gen(function*() {
      let wait = firstPoll
      while (true) {
        const answer = yield* Effect.tryPromise({
          try: () =>
            new Promise<{ jobComplete?: boolean; numDmlAffectedRows?: string }>((resolve, reject) =>
              (bq as unknown as { request: (o: unknown, cb: (err: unknown, resp: unknown) => void) => void }).request(
                { uri: `/queries/${job.id}`, qs: { maxResults: 0, timeoutMs: 10_000, ...(location === undefined ? {} : { location }) } },
                (err, resp) => (err ? reject(err) : resolve(resp as { jobComplete?: boolean; numDmlAffectedRows?: string }))
              )
            ),
          catch: (e) => e
        }).pipe(Effect.map((r) => ({ ok: true as const, r })), Effect.catch((e) => Effect.succeed({ ok: false as const, e })))
        if (answer.ok && answer.r.jobComplete === true) {
          return { affected: answer.r.numDmlAffectedRows === undefined ? undefined : Number(answer.r.numDmlAffectedRows) } as const
        }
        if (!answer.ok) {
          // the job failed (its error), or the look did: the job's state says which
          const [metadata] = yield* call(`cannot read job ${job.id}`, () => job.getMetadata())
          const status = (metadata as { status?: { state?: string; errorResult?: { reason?: string; message?: string } } }).status
          if (status?.state === "DONE" && status.errorResult !== undefined) return { error: status.errorResult } as const
          if (status?.state === "DONE") continue
          yield* Effect.sleep(Duration.millis(wait))
          wait = Math.min(2_000, Math.round(wait * 1.5))
        }
      }
    })

  /**
   * Runs a statement as a query job under the first free id of `base_0 … base_3`: a job already there (409) is read
   * instead of run again; one that failed for the service's reasons moves on to the next id.
   */
  const runJob = (base: string, sql: string, params: ReadonlyArray<QueryParameter>) =>
    Effect.gen(function*() {
      const { client: bq, location } = yield* client
      for (let n = 0; n < ATTEMPTS; n++) {
        const jobId = `${base}_${n}`
        const job = bq.job(jobId, location === undefined ? {} : { location })
        let tries = 0
        while (true) {
          const created = yield* Effect.tryPromise({
            try: () =>
              bq.createQueryJob({
                query: sql,
                useLegacySql: false,
                jobId,
                ...(params.length === 0 ? {} : { parameterMode: "NAMED", queryParameters: params as Array<never> }),
                ...(location === undefined ? {} : { location })
              } as never),
            catch: (e) => e
          }).pipe(Effect.as("created" as const), Effect.catch((e) => Effect.succeed(BqClient.statusOf(e) === 409 ? "exists" as const : e)))
          if (created === "created" || created === "exists") break
          if (BqClient.statusOf(created) === 400) return yield* sourceError(BqClient.describe(created))
          if (++tries >= 4) return yield* sourceError(`cannot create job ${jobId}: ${BqClient.describe(created)}`)
          const found = yield* Effect.tryPromise({ try: () => job.getMetadata(), catch: (e) => e }).pipe(Effect.as(true), Effect.catch(() => Effect.succeed(false)))
          if (found) break
          yield* Effect.sleep(Duration.millis(200 * 2 ** tries))
        }
        const done = yield* waitDone(bq, job, location)
        if (!("error" in done)) return done
        const error = done.error
        if (!TRANSIENT.has(error.reason ?? "")) return yield* sourceError(`job ${jobId} failed: ${error.message ?? error.reason ?? "no message"}`)
        yield* Effect.logWarning(`bigquery pushdown ${name}: job ${jobId} failed (${error.reason}: ${error.message}); running it again as ${base}_${n + 1}`)
      }
      return yield* sourceError(`${ATTEMPTS} jobs ${base}_* failed for the service's reasons`)
    })

  /** a read-only query's first page of rows, as raw `{f: [{v}]}` rows with their field names */
  const select = (what: string, sql: string, params: ReadonlyArray<QueryParameter>) =>
    Effect.gen(function*() {
      const { client: bq, location } = yield* client
      const [job] = yield* call(what, () =>
        bq.createQueryJob({
          query: sql,
          useLegacySql: false,
          ...(params.length === 0 ? {} : { parameterMode: "NAMED", queryParameters: params as Array<never> }),
          ...(location === undefined ? {} : { location })
        } as never))
      const done = yield* waitDone(bq, job, location)
      if ("error" in done) return yield* sourceError(`${what}: ${done.error.message ?? done.error.reason ?? "the query failed"}`)
      const [rows, , response] = yield* call(what, () =>
        job.getQueryResults({ autoPaginate: false, skipParsing: true } as never) as unknown as Promise<[Array<{ f: Array<{ v: unknown }> }>, unknown, { schema?: { fields?: Array<{ name: string }> } }]>)
      const names = (response?.schema?.fields ?? []).map((f) => f.name)
      return rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row.f[i]?.v ?? null])) as Record<string, unknown>)
    })

  /** whether the engine has `SAFE.PARSE_JSON` (BigQuery has; an emulator may not) */
  let safeParse: boolean | undefined
  const probeSafeParse = Effect.suspend(() =>
    safeParse !== undefined ? Effect.succeed(safeParse) : Effect.gen(function*() {
      const { client: bq, location } = yield* client
      const answer = yield* Effect.tryPromise({
        try: () => bq.query({ query: "SELECT SAFE.PARSE_JSON('{') IS NULL AS x", useLegacySql: false, ...(location === undefined ? {} : { location }) } as never),
        catch: (e) => e
      }).pipe(Effect.as(true), Effect.catch((e) => /SAFE\./.test(BqClient.describe(e)) ? Effect.succeed(false) : Effect.fail(sourceError(`cannot run a query: ${BqClient.describe(e)}`))))
      if (!answer) yield* Effect.logInfo(`bigquery pushdown ${name}: the engine has no SAFE.PARSE_JSON; answers are parsed with a guarded PARSE_JSON`)
      safeParse = answer
      return answer
    })
  )

  // ----- tables -----

  const refOf = (text: string, project: string | undefined, what: string) => {
    const t = BqClient.parseTable(text, project)
    return typeof t === "string" ? Effect.fail(sourceError(`${what}: ${t}`)) : Effect.succeed({ ...t, projectId: t.projectId ?? project ?? "" })
  }

  const stagingDataset = Effect.gen(function*() {
    const { client: bq } = yield* client
    const parts = options.dataset.replace(/^`|`$/g, "").split(".")
    if (parts.length > 2 || parts.some((p) => p.length === 0)) return yield* sourceError(`dataset: "dataset" or "project.dataset", got ${JSON.stringify(options.dataset)}`)
    return parts.length === 2 ? { projectId: parts[0]!, datasetId: parts[1]! } : { projectId: bq.projectId, datasetId: parts[0]! }
  })

  let datasetReady = false
  const ensureDataset = Effect.gen(function*() {
    if (datasetReady) return
    const { client: bq, location } = yield* client
    const d = yield* stagingDataset
    yield* Effect.tryPromise({ try: () => bq.dataset(d.datasetId, { projectId: d.projectId }).create(location === undefined ? {} : { location }), catch: (e) => e }).pipe(
      Effect.catch((e) => BqClient.statusOf(e) === 409 ? Effect.void : Effect.fail(sourceError(`cannot create the dataset ${d.projectId}.${d.datasetId}: ${BqClient.describe(e)}`)))
    )
    datasetReady = true
  })

  const tablesOf = (batchId: string) =>
    Effect.map(stagingDataset, (d) => {
      const h = hashOf(batchId)
      return {
        input: { ...d, tableId: `offpeak_${h}_in` },
        output: { ...d, tableId: `offpeak_${h}_out` }
      }
    })

  const uri = (t: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }) => `bq://${t.projectId}.${t.datasetId}.${t.tableId}`

  const fromUri = (text: string) =>
    Effect.gen(function*() {
      const m = /^bq:\/\/(.+)\.([^.]+)\.([^.]+)$/.exec(text)
      if (m === null) return yield* sourceError(`not a table of this pushdown: ${text}`)
      return { projectId: m[1]!, datasetId: m[2]!, tableId: m[3]! }
    })

  /**
   * The job's output table, or — when the job wrote none (it failed or was cancelled before it started) — an empty
   * one of the same shape: every row of the input then has no answer.
   */
  const outputOf = (input: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }, output: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }) =>
    Effect.gen(function*() {
      const { client: bq } = yield* client
      const [exists] = yield* call("cannot look for the job's output table", () => bq.dataset(output.datasetId, { projectId: output.projectId }).table(output.tableId).exists())
      if (exists) return BqClient.quoteTable(output)
      const answer = request._tag === "Chat" ? "CAST(NULL AS JSON) AS response" : "CAST(NULL AS STRING) AS predictions"
      return `(SELECT ${keys.map(Sql.q).join(", ")}, CAST(NULL AS STRING) AS status, ${answer} FROM ${BqClient.quoteTable(input)} WHERE FALSE)`
    })

  const classifiedOf = (staged: Source.Staged) =>
    Effect.gen(function*() {
      const input = yield* fromUri(staged.input)
      const output = yield* fromUri(staged.output)
      const sql = Sql.classified({
        kind: request._tag === "Chat" ? "chat" : "embedding",
        input: BqClient.quoteTable(input),
        output: yield* outputOf(input, output),
        keys,
        columns,
        embeddingColumn,
        safeParse: request._tag === "Chat" ? yield* probeSafeParse : false
      })
      return { sql, params: parameters(request._tag === "Chat" ? Sql.columnParams(columns) : {}), input, output }
    })

  const guard = <A>(effect: Effect.Effect<A, SourceError>) => problem !== undefined ? Effect.fail(sourceError(problem)) : effect

  // ----- stage -----

  const stage: Source.Pushdown["stage"] = (job) =>
    guard(Effect.gen(function*() {
      const { client: bq } = yield* client
      yield* ensureDataset
      const { input, output } = yield* tablesOf(job.batchId)
      const inQ = BqClient.quoteTable(input)
      const expire = "OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 7 DAY))"
      let sql: string
      let params: Array<QueryParameter>
      if (job.retryOf === undefined) {
        const base = "table" in options.source
          ? BqClient.quoteTable(yield* refOf(options.source.table, bq.projectId, "source"))
          : `(${options.source.query})`
        sql = `CREATE OR REPLACE TABLE ${inQ} ${expire} AS
SELECT ${keys.map(Sql.q).join(", ")}, ${requestSql} AS ${requestColumn}
FROM ${base} AS __offpeak_src`
        params = [...parameters(userParams, userTypes), ...parameters(requestParams)]
      } else {
        const previous = yield* classifiedOf(job.retryOf)
        const on = keys.map((k) => `i.${Sql.q(k)} = ok.${Sql.q(k)}`).join(" AND ")
        sql = `CREATE OR REPLACE TABLE ${inQ} ${expire} AS
SELECT i.* FROM ${BqClient.quoteTable(previous.input)} AS i
LEFT JOIN (SELECT ${keys.map(Sql.q).join(", ")}, TRUE AS __ok FROM (${previous.sql}) WHERE __reason IS NULL) AS ok ON ${on}
WHERE ok.__ok IS NULL`
        params = previous.params
      }
      yield* runJob(`offpeak_stage_${hashOf(job.batchId)}`, sql, params)
      const keyNull = keys.map((k) => `${Sql.q(k)} IS NULL`).join(" OR ")
      const keyText = keys.length === 1 ? Sql.q(keys[0]!) : `TO_JSON_STRING(STRUCT(${keys.map((k) => `${Sql.q(k)} AS ${Sql.q(k)}`).join(", ")}))`
      const [counts] = yield* select(
        "cannot count the staged rows",
        `SELECT COUNT(*) AS n, COUNTIF(${keyNull}) AS nulls, COUNT(DISTINCT IF(${keyNull}, NULL, ${keyText})) AS keys FROM ${inQ}`,
        []
      )
      const n = Number(counts?.n ?? 0)
      const nulls = Number(counts?.nulls ?? 0)
      const distinct = Number(counts?.keys ?? 0)
      if (nulls > 0) return yield* sourceError(`${nulls} source row(s) have a NULL key (${keys.join(", ")}): a pushed-down job joins each answer to its row on the key`)
      if (n - nulls > distinct) {
        const dup = yield* select(
          "cannot find the duplicate keys",
          `SELECT CAST(${keyText} AS STRING) AS k, COUNT(*) AS c FROM ${inQ} GROUP BY 1 HAVING COUNT(*) > 1 ORDER BY c DESC LIMIT 3`,
          []
        )
        return yield* sourceError(
          `${n - distinct} source row(s) repeat a key (${dup.map((d) => `${String(d.k)} ×${String(d.c)}`).join(", ")}): a pushed-down job needs each key once`
        )
      }
      return {
        kind: "bigquery",
        model: request.model,
        input: uri(input),
        output: uri(output),
        keyColumns: keys,
        rows: n
      } satisfies Source.Staged
    }))

  // ----- tally, land, failures -----

  const tally: Source.Pushdown["tally"] = (staged) =>
    guard(Effect.gen(function*() {
      const c = yield* classifiedOf(staged)
      const [row] = yield* select("cannot count the job's answers", `SELECT COUNT(*) AS n, COUNTIF(__reason IS NULL) AS ok FROM (${c.sql})`, c.params)
      const n = Number(row?.n ?? 0)
      const ok = Number(row?.ok ?? 0)
      return { succeeded: ok, failed: n - ok }
    }))

  type Field = { readonly name: string; readonly type: string; readonly mode?: string | undefined }

  /** the target, created when missing: the key columns typed as in the job's input, the output's fields */
  const ensureTarget = (input: { readonly projectId: string; readonly datasetId: string; readonly tableId: string }) =>
    Effect.gen(function*() {
      const { client: bq, location } = yield* client
      const t = yield* refOf(options.target.table, bq.projectId, "target")
      const table = bq.dataset(t.datasetId, { projectId: t.projectId }).table(t.tableId)
      const wanted: Array<Field> = request._tag === "Chat"
        ? columns.map((c) => ({ name: c.name, type: c.type, mode: "NULLABLE" }))
        : [{ name: embeddingColumn, type: "JSON", mode: "NULLABLE" }]
      const existing = yield* Effect.tryPromise({ try: () => table.getMetadata(), catch: (e) => e }).pipe(
        Effect.map(([m]) => ((m as { schema?: { fields?: ReadonlyArray<Field> } }).schema?.fields ?? []) as ReadonlyArray<Field>),
        Effect.catch((e) => BqClient.statusOf(e) === 404 ? Effect.succeed(undefined) : Effect.fail(sourceError(`cannot read the target: ${BqClient.describe(e)}`)))
      )
      if (existing !== undefined) {
        const missing = [...keys, ...wanted.map((f) => f.name)].filter((n) => !existing.some((f) => f.name.toLowerCase() === n.toLowerCase()))
        if (missing.length > 0) return yield* sourceError(`the target ${options.target.table} has no column ${missing.map((m) => JSON.stringify(m)).join(", ")}`)
        return t
      }
      const [meta] = yield* call("cannot read the job's input table", () => bq.dataset(input.datasetId, { projectId: input.projectId }).table(input.tableId).getMetadata())
      const inputFields = ((meta as { schema?: { fields?: ReadonlyArray<Field> } }).schema?.fields ?? []) as ReadonlyArray<Field>
      const keyFields = keys.map((k) => inputFields.find((f) => f.name.toLowerCase() === k.toLowerCase()))
      if (keyFields.some((f) => f === undefined)) return yield* sourceError(`the job's input has no key column ${keys.join(", ")}`)
      const fields = [...keyFields.map((f) => ({ name: f!.name, type: f!.type, mode: "REQUIRED" })), ...wanted]
      yield* Effect.tryPromise({ try: () => table.create({ schema: { fields }, ...(location === undefined ? {} : { location }) } as never), catch: (e) => e }).pipe(
        Effect.catch((e) => BqClient.statusOf(e) === 409 ? Effect.void : Effect.fail(sourceError(`cannot create the target: ${BqClient.describe(e)}`)))
      )
      yield* Effect.logInfo(`bigquery pushdown ${name}: created ${t.projectId}.${t.datasetId}.${t.tableId} with ${fields.length} columns`)
      return t
    })

  const land: Source.Pushdown["land"] = (staged) =>
    guard(Effect.gen(function*() {
      const c = yield* classifiedOf(staged)
      const t = yield* ensureTarget(c.input)
      const values = request._tag === "Chat" ? columns.map((col) => col.name) : [embeddingColumn]
      const all = [...keys, ...values]
      const on = keys.map((k) => `T.${Sql.q(k)} = S.${Sql.q(k)}`).join(" AND ")
      const sql = `MERGE ${BqClient.quoteTable(t)} AS T
USING (SELECT ${all.map(Sql.q).join(", ")} FROM (${c.sql}) WHERE __reason IS NULL) AS S
ON ${on}
WHEN MATCHED THEN UPDATE SET ${values.map((v) => `${Sql.q(v)} = S.${Sql.q(v)}`).join(", ")}
WHEN NOT MATCHED THEN INSERT (${all.map(Sql.q).join(", ")}) VALUES (${all.map((v) => `S.${Sql.q(v)}`).join(", ")})`
      const done = yield* runJob(`offpeak_land_${hashOf(`${staged.output}\u0000${t.projectId}.${t.datasetId}.${t.tableId}`)}`, sql, c.params)
      return done.affected ?? (yield* tally(staged)).succeeded
    }))

  const PAGE = 10_000

  const failures: Source.Pushdown["failures"] = (staged) =>
    problem !== undefined
      ? Stream.fail(sourceError(problem))
      : Stream.unwrap(Effect.gen(function*() {
        const { client: bq, location } = yield* client
        const c = yield* classifiedOf(staged)
        const [job] = yield* call("cannot read the failed rows", () =>
          bq.createQueryJob({
            query: `SELECT __key, __reason, __raw FROM (${c.sql}) WHERE __reason IS NOT NULL`,
            useLegacySql: false,
            ...(c.params.length === 0 ? {} : { parameterMode: "NAMED", queryParameters: c.params as Array<never> }),
            ...(location === undefined ? {} : { location })
          } as never))
        const done = yield* waitDone(bq, job, location)
        if ("error" in done) return yield* sourceError(`cannot read the failed rows: ${done.error.message ?? done.error.reason ?? "the query failed"}`)
        const page = (token: string | undefined) =>
          call("cannot read the failed rows", () =>
            job.getQueryResults({ autoPaginate: false, skipParsing: true, maxResults: PAGE, ...(token !== undefined ? { pageToken: token } : {}) } as never) as unknown as Promise<
              [Array<{ f: Array<{ v: unknown }> }>, { pageToken?: string } | null]
            >)
        return Stream.paginate(undefined as string | undefined, (token) =>
          Effect.map(page(token), ([rows, next]) => {
            const failures = rows.map((row): Source.TableFailure => {
              const raw = row.f[2]?.v
              return {
                key: String(row.f[0]?.v ?? ""),
                message: String(row.f[1]?.v ?? ""),
                ...(typeof raw === "string" ? { raw: raw.length > 2_000 ? `${raw.slice(0, 2_000)}…` : raw } : {})
              }
            })
            const token = next?.pageToken
            return [failures, token === undefined || token === "" ? Option.none() : Option.some(token)] as const
          }))
      }))

  return { name, requestSql, requestParams, stage, tally, land, failures }
}
