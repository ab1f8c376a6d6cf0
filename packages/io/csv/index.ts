/**
 * @since 0.1.0
 */

/**
 * CSV files as a source and as a sink.
 *
 * @since 0.1.0
 */
export * as Csv from "./Csv.ts"
