/**
 * The `@google-cloud/bigquery` client of a connection: project, location and
 * credentials from the options, else from the environment; errors turned
 * into messages that never carry credentials.
 *
 * @internal
 */
import { BigQuery } from "@google-cloud/bigquery"
import { Config, Effect, Option, Redacted } from "effect"
import { PassThroughClient } from "google-auth-library"

/** where and as whom the connector talks to BigQuery */
export interface Connection {
  /** the project jobs run in (and are billed to); default `GOOGLE_CLOUD_PROJECT`, else the credentials' */
  readonly projectId?: string | undefined
  /** where jobs run (`US`, `EU`, a region); default `BIGQUERY_LOCATION`, else BigQuery's choice */
  readonly location?: string | undefined
  /**
   * Another endpoint, e.g. an emulator's `http://127.0.0.1:9050`; default
   * `BIGQUERY_EMULATOR_HOST`. An `http://` endpoint gets no credentials (a
   * `PassThroughClient`) unless `authClient` is given.
   */
  readonly apiEndpoint?: string | undefined
  /** a service account key file; default Google's application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud, metadata server) */
  readonly keyFilename?: string | undefined
  /** a service account key as JSON text (a `Redacted` keeps it out of logs) */
  readonly credentials?: Redacted.Redacted<string> | string | undefined
  /** an auth client of `google-auth-library` used as is (e.g. `new PassThroughClient()`) */
  readonly authClient?: unknown
}

/** the connection with the environment's defaults filled in */
export const resolve = (connection: Connection | undefined): Effect.Effect<Connection> =>
  Effect.gen(function*() {
    const env = (name: string) => Config.String(name).pipe(Config.option, Effect.orElseSucceed(() => Option.none<string>()))
    const project = connection?.projectId ?? Option.getOrUndefined(yield* env("GOOGLE_CLOUD_PROJECT"))
    const location = connection?.location ?? Option.getOrUndefined(yield* env("BIGQUERY_LOCATION"))
    const endpoint = connection?.apiEndpoint ?? Option.getOrUndefined(yield* env("BIGQUERY_EMULATOR_HOST"))
    return { ...connection, projectId: project, location, apiEndpoint: endpoint }
  })

/** a client for a resolved connection */
export const make = (c: Connection): BigQuery => {
  const credentials = c.credentials === undefined
    ? undefined
    : JSON.parse(Redacted.isRedacted(c.credentials) ? Redacted.value(c.credentials) : c.credentials) as { client_email: string; private_key: string }
  const emulator = c.apiEndpoint !== undefined && c.apiEndpoint.startsWith("http://")
  return new BigQuery({
    ...(c.projectId === undefined ? {} : { projectId: c.projectId }),
    ...(c.location === undefined ? {} : { location: c.location }),
    ...(c.apiEndpoint === undefined ? {} : { apiEndpoint: c.apiEndpoint }),
    ...(c.keyFilename === undefined ? {} : { keyFilename: c.keyFilename }),
    ...(credentials === undefined ? {} : { credentials }),
    ...(c.authClient !== undefined
      ? { authClient: c.authClient as never }
      : emulator && credentials === undefined && c.keyFilename === undefined
      ? { authClient: new PassThroughClient() as never }
      : {})
  })
}

/** the HTTP status of a client error, if it has one */
export const statusOf = (e: unknown): number | undefined => {
  const code = (e as { code?: unknown } | null)?.code
  return typeof code === "number" ? code : undefined
}

/** the message of a client error, without request details */
export const describe = (e: unknown): string => {
  const err = e as { message?: unknown; errors?: Array<{ message?: string; reason?: string }> } | null
  const text = typeof err?.message === "string" ? err.message : String(e)
  return text.length > 2_000 ? `${text.slice(0, 2_000)}…` : text
}

/** the reason (`notFound`, `invalidQuery`, `duplicate`, `backendError`, …) of a client error */
export const reasonOf = (e: unknown): string | undefined => {
  const errors = (e as { errors?: Array<{ reason?: string }> } | null)?.errors
  return Array.isArray(errors) ? errors[0]?.reason : undefined
}

/** `project.dataset.table` or `dataset.table` → its parts (the project defaults to the client's) */
export const parseTable = (name: string, project: string | undefined): { projectId: string | undefined; datasetId: string; tableId: string } | string => {
  const parts = name.replace(/^`|`$/g, "").split(".")
  if (parts.length === 2) return { projectId: project, datasetId: parts[0]!, tableId: parts[1]! }
  if (parts.length === 3) return { projectId: parts[0]!, datasetId: parts[1]!, tableId: parts[2]! }
  return `a table is "dataset.table" or "project.dataset.table", got ${JSON.stringify(name)}`
}

/** a column name BigQuery accepts, else what is wrong */
export const columnProblem = (name: string): string | undefined =>
  /^[A-Za-z_][A-Za-z0-9_]{0,299}$/.test(name) ? undefined : `${JSON.stringify(name)} is not a BigQuery column name (letters, digits, underscores)`

/** a table path quoted for GoogleSQL: `` `project.dataset.table` `` */
export const quoteTable = (t: { readonly projectId?: string | undefined; readonly datasetId: string; readonly tableId: string }): string =>
  `\`${[t.projectId, t.datasetId, t.tableId].filter((p) => p !== undefined).join(".").replaceAll("`", "")}\``
