/**
 * @since 0.1.0
 */

/**
 * BigQuery as a source (a table or a query, paged, typed, checkpointed on a
 * total order) and as a sink (load jobs and MERGE, idempotent per part), on
 * the official `@google-cloud/bigquery`.
 *
 * @since 0.1.0
 */
export * as BigQuery from "./BigQuery.ts"

/**
 * A local BigQuery REST emulator on DuckDB for the official client
 * (`@duckdb/node-api` is loaded only when it is served).
 *
 * @since 0.1.0
 */
export * as Emulator from "./Emulator.ts"

/**
 * Vertex AI batch prediction over BigQuery, pushed down: requests built by
 * BigQuery, answers decoded and MERGEd by BigQuery, no row through offpeak
 * (`BigQuery.pushdown`, `Pushdown.chat`, `Pushdown.embedding`).
 *
 * @since 0.1.0
 */
export * as Pushdown from "./Pushdown.ts"
