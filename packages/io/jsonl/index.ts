/**
 * @since 0.1.0
 */

/**
 * JSON Lines files as a source and as a sink.
 *
 * @since 0.1.0
 */
export * as Jsonl from "./Jsonl.ts"
