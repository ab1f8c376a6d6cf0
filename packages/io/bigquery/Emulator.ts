/**
 * A local emulator of the BigQuery REST API v2, faithful enough for the
 * official `@google-cloud/bigquery` client (with
 * `authClient: new PassThroughClient()` from `google-auth-library`, and
 * `apiEndpoint: url`), with DuckDB (`@duckdb/node-api`) as the SQL engine and
 * all state on disk.
 *
 * **What it serves**
 *
 * - Datasets (insert, get, list, delete with `deleteContents`) and tables
 *   (insert with a schema of nested RECORD / REPEATED fields, or a view; get,
 *   list, patch to add columns, delete).
 * - `jobs.insert` for query, load and copy jobs; a job id given by the client
 *   that is already taken answers 409 `duplicate` (the job is not run again);
 *   `jobs.get`, `jobs.list`, `jobs.cancel` (of a job not started yet).
 * - `jobs.query` (the fast path, `requestId` idempotent) and
 *   `jobs.getQueryResults` with `maxResults`, `pageToken`, `startIndex`,
 *   `timeoutMs`; `tabledata.list` with the same paging and `selectedFields`;
 *   `tabledata.insertAll` (per-row errors, `skipInvalidRows`,
 *   `ignoreUnknownValues`, `insertId` de-duplication for a minute).
 * - Load jobs from an upload (`/upload/bigquery/v2/…`, multipart or
 *   resumable) or from `gs://` URIs of the Cloud Storage emulator (`gcsDir`):
 *   NEWLINE_DELIMITED_JSON, with `writeDisposition`, `createDisposition`,
 *   `schema`, `maxBadRecords`, `ignoreUnknownValues`. A value BigQuery would
 *   refuse fails the job with BigQuery's wording, e.g. `Error while reading
 *   data, error message: JSON parsing error in row starting at position 132:
 *   Could not convert value to integer. Field: n; Value: abc` (the byte
 *   position of the row, the field's path).
 * - Rows encoded as the client expects: `{ f: [{ v }] }`, RECORD as nested
 *   `{ f }`, REPEATED as `[{ v }]`, every scalar a string, TIMESTAMP as int64
 *   microseconds (`formatOptions.useInt64Timestamp`, which the client sends),
 *   DATETIME `2024-01-02T03:04:05.123456`, NUMERIC without trailing zeros,
 *   BYTES base64, JSON as its text.
 * - Served both under `/bigquery/v2` (`apiEndpoint`) and without it
 *   (`BIGQUERY_EMULATOR_HOST`).
 *
 * **The SQL it runs** (GoogleSQL translated to DuckDB; anything else fails
 * with an `invalidQuery` error naming the construct, never a different answer)
 *
 * - Statements: SELECT / WITH (joins, subqueries, set operations, window
 *   functions, QUALIFY, `SELECT * EXCEPT / REPLACE`, `UNNEST` in FROM and
 *   `IN UNNEST(@array)`), INSERT, UPDATE, DELETE, MERGE (a target row matched by
 *   two source rows fails as in BigQuery), CREATE [OR REPLACE] TABLE (columns
 *   or AS SELECT; PARTITION BY, CLUSTER BY and OPTIONS are accepted and
 *   ignored), CREATE SCHEMA, CREATE VIEW, DROP TABLE / SCHEMA / VIEW, ALTER
 *   TABLE ADD / DROP COLUMN, TRUNCATE TABLE; several statements separated by
 *   `;` run in one transaction (the last one's rows are the job's result).
 * - Names: `` `project.dataset.table` ``, `dataset.table` (the job's project),
 *   `table` (with `defaultDataset`), unquoted `my-project.ds.t`.
 * - Named parameters `@name` of every scalar type, ARRAY and STRUCT.
 *   Positional parameters (`?`) and `@@` variables are refused.
 * - Types in CAST / SAFE_CAST / DDL / typed literals: INT64, FLOAT64, BOOL,
 *   STRING, BYTES, NUMERIC (DECIMAL(38,9)), BIGNUMERIC (held as
 *   DECIMAL(38,9): a value with more than 29 integer or 9 fractional digits is
 *   refused), DATE, DATETIME, TIME, TIMESTAMP, JSON, ARRAY<T>, STRUCT<…>.
 *   String literals in single, double or triple quotes, raw and bytes.
 * - Functions: COUNT, COUNTIF, SUM, AVG, MIN, MAX, ANY_VALUE, ARRAY_AGG,
 *   STRING_AGG, LOGICAL_AND/OR, STDDEV, VARIANCE, APPROX_COUNT_DISTINCT;
 *   ROW_NUMBER, RANK, DENSE_RANK, PERCENT_RANK, CUME_DIST, NTILE, LAG, LEAD,
 *   FIRST/LAST/NTH_VALUE; COALESCE, IFNULL, NULLIF, IF, GREATEST, LEAST (NULL
 *   if any argument is); ABS, SIGN, SQRT, POW, EXP, LN, LOG, LOG10, FLOOR,
 *   CEIL, ROUND, TRUNC, MOD, SAFE_DIVIDE, IEEE_DIVIDE; CONCAT (NULL if any
 *   argument is), LOWER, UPPER, LENGTH, TRIM, LTRIM, RTRIM, SUBSTR, REPLACE,
 *   REVERSE, REPEAT, LPAD, RPAD, STARTS_WITH, ENDS_WITH, STRPOS, LEFT, RIGHT,
 *   SPLIT, REGEXP_CONTAINS, REGEXP_EXTRACT (a literal pattern),
 *   REGEXP_REPLACE, TO_BASE64, FROM_BASE64, TO_HEX, MD5, SHA256, BYTE_LENGTH;
 *   ARRAY_LENGTH, ARRAY_TO_STRING, ARRAY_CONCAT, ARRAY_REVERSE,
 *   GENERATE_ARRAY, ARRAY(subquery), STRUCT(x AS name, …), `arr[OFFSET(i)]`,
 *   `[ORDINAL(i)]`, `[SAFE_OFFSET(i)]`; CURRENT_TIMESTAMP / DATE / DATETIME,
 *   DATE(…), TIMESTAMP(…), DATETIME(…), TIMESTAMP_MICROS / MILLIS /
 *   SECONDS, UNIX_MICROS / MILLIS / SECONDS / DATE, EXTRACT(YEAR … DATE),
 *   DATE_ADD / SUB, TIMESTAMP_ADD / SUB, DATETIME_ADD / SUB with
 *   `INTERVAL n unit`, DATE_DIFF(…, DAY), TIMESTAMP_DIFF (MICROSECOND … DAY),
 *   DATE_TRUNC / TIMESTAMP_TRUNC / DATETIME_TRUNC (not WEEK); TO_JSON_STRING,
 *   TO_JSON, PARSE_JSON, JSON_VALUE, JSON_QUERY, JSON_EXTRACT(_SCALAR);
 *   GENERATE_UUID.
 * - Known differences, by design or DuckDB's: integer literals are 32-bit
 *   until they do not fit (so `2147483647 + 1` fails instead of giving
 *   2147483648: write `CAST(2147483647 AS INT64) + 1`); division by zero gives
 *   NULL instead of an error; `arr[OFFSET(i)]` past the end gives NULL instead
 *   of an error; TO_JSON_STRING writes TIMESTAMP as `2024-01-01 00:00:00+00`
 *   (BigQuery: `2024-01-01T00:00:00Z`). Not served: legacy SQL, scripting
 *   (DECLARE, IF, LOOP, transactions), time travel, TABLESAMPLE, PIVOT,
 *   GEOGRAPHY, RANGE, INTERVAL literals, FORMAT and the PARSE_ / FORMAT_
 *   date functions, `SAFE.` prefixed functions, dry runs, CSV / Avro /
 *   Parquet loads, schema auto-detection, partition decorators, routines,
 *   models, row access policies.
 *
 * **Details**
 *
 * - State: one DuckDB file per project in `dir/projects`; a job runs in one
 *   transaction that also marks it DONE, so a process killed mid-job leaves
 *   neither its effects nor a DONE, and the next `serve` on the folder runs
 *   it. Jobs run one at a time in creation order.
 * - Faults (see {@link Options}): HTTP errors on any endpoint; slow jobs;
 *   jobs that fail; `jobs.insert` that creates the job and answers 500.
 *
 * @example
 * ```ts
 * import { Emulator } from "@offpeak/io/bigquery"
 * import { BigQuery } from "@google-cloud/bigquery"
 * import { PassThroughClient } from "google-auth-library"
 *
 * const program = Effect.gen(function*() {
 *   const bq = yield* Emulator.serve({ dir: ".offpeak/bigquery" })
 *   const client = new BigQuery({ projectId: "test-proj", apiEndpoint: bq.url, authClient: new PassThroughClient() })
 *   // await client.createDataset("ds"); await client.query({ query: "SELECT 1 AS x" })
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"
import type { Scope } from "effect"
import * as path from "node:path"
import * as Faults from "../gcs/internal/faults.ts"
import * as Http from "../gcs/internal/http.ts"
import { Engine } from "./internal/emulatorEngine.ts"
import type * as EngineTypes from "./internal/emulatorEngine.ts"
import * as Routes from "./internal/emulatorRoutes.ts"

// ===== Models =====

/**
 * An endpoint of the emulator, by its REST method name (`jobs.insert` also
 * covers load uploads).
 *
 * @since 0.1.0
 * @category models
 */
export type EndpointName = Routes.EndpointName

/**
 * The emulator's knobs: plain JSON. Fault counters start when `serve` starts.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** persist all state here; absent: a fresh temp folder, removed when the scope closes */
  readonly dir?: string | undefined
  /** seeds the fault rates (default 0) */
  readonly seed?: number | undefined
  /** HTTP errors on chosen endpoints (`"*"`: any), the first `times` calls, then at `rate`; Google's error shape */
  readonly endpointFaults?: ReadonlyArray<Faults.EndpointFault<EndpointName>> | undefined
  /** every job stays RUNNING at least this long (default 0): clients poll `jobs.get` / `getQueryResults` meanwhile */
  readonly jobDelayMs?: number | undefined
  /**
   * Jobs that fail (DONE with `errorResult`) whatever they hold: of a kind
   * (`query`, `load`, `copy`, default any), the first `times`, then at `rate`;
   * `reason` defaults to `backendError`.
   */
  readonly failJobs?: EngineTypes.FailJobs | undefined
  /** the first N `jobs.insert` calls that create their job answer 500 anyway (the client must find the job) */
  readonly jobInsertSucceedsThenFails?: number | undefined
  /** a Cloud Storage emulator's folder (`GcsEmulator.Handle.dir`): load jobs read `gs://` URIs from it */
  readonly gcsDir?: string | undefined
  /** the location of datasets and jobs (default `US`) */
  readonly location?: string | undefined
}

/**
 * Counters since `serve` started.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly jobsCreated: number
  readonly jobsRun: number
  readonly rowsLoaded: number
  readonly rowsInserted: number
  /** requests received per endpoint (`jobs.getQueryResults`, `tabledata.list`, …), faults included */
  readonly requests: Readonly<Record<string, number>>
}

/**
 * A running emulator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handle {
  /** the origin to give the client as `apiEndpoint` (or `BIGQUERY_EMULATOR_HOST`), e.g. `http://127.0.0.1:41234` */
  readonly url: string
  /** the folder holding its state */
  readonly dir: string
  readonly stats: Effect.Effect<Stats>
}

// ===== Errors =====

/**
 * The emulator could not start (folder not usable, DuckDB missing, port taken, bad knobs).
 *
 * @since 0.1.0
 * @category errors
 */
export class EmulatorError extends Schema.TaggedError<EmulatorError>()("EmulatorError", {
  message: Schema.String
}) {}

// ===== Constructors =====

const message = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/**
 * Starts the emulator on `host:port` (default `127.0.0.1`, an ephemeral
 * port). It stops when the scope closes (the DuckDB files are closed).
 * `@duckdb/node-api` is loaded only here.
 *
 * @since 0.1.0
 * @category constructors
 */
export const serve = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined } = {}
): Effect.Effect<Handle, EmulatorError, Scope.Scope> =>
  Effect.gen(function*() {
    const faults = options.endpointFaults ?? []
    const wrong = Faults.check(faults, Routes.ENDPOINTS)
    if (wrong !== undefined) return yield* new EmulatorError({ message: `bad emulator knobs: ${wrong}` })
    const dir = yield* Http.stateFolder(options.dir, "offpeak-bigquery-emulator").pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    const engine = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          Engine.open(dir, {
            seed: options.seed ?? 0,
            jobDelayMs: Math.max(0, options.jobDelayMs ?? 0),
            failJobs: options.failJobs ?? null,
            jobInsertSucceedsThenFails: Math.max(0, options.jobInsertSucceedsThenFails ?? 0),
            gcsDir: options.gcsDir,
            location: options.location ?? "US"
          }),
        catch: (cause) => new EmulatorError({ message: `cannot open the emulator's DuckDB files in ${dir}: ${message(cause)}` })
      }),
      (engine) => Effect.promise(() => engine.close())
    )
    const runtime: Routes.Runtime = {
      engine,
      fault: Faults.make(faults, options.seed ?? 0),
      sessions: path.join(dir, "sessions"),
      requests: {}
    }
    const url = yield* Http.listen(Routes.handle(runtime), options).pipe(
      Effect.mapError((message) => new EmulatorError({ message }))
    )
    return { url, dir, stats: Effect.sync((): Stats => ({ ...engine.stats, requests: { ...runtime.requests } })) }
  })
