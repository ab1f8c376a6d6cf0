/**
 * @since 0.1.0
 */

/**
 * PostgreSQL as a source (server-side cursor, checkpoints) and as a sink
 * (idempotent upsert, pgvector).
 *
 * @since 0.1.0
 */
export * as Postgres from "./Postgres.ts"
