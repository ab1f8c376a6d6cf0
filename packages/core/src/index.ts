/**
 * @offpeak/core: the request/result model, the Provider interface, the
 * Batcher, the Ledger, the Pipeline and the CLI. Import modules as namespaces,
 * from here or from their subpaths (`@offpeak/core/Pipeline`).
 *
 * @since 0.1.0
 */
export * as AdaptiveLimit from "./AdaptiveLimit.ts"
export * as Batcher from "./Batcher.ts"
export * as Estimate from "./Estimate.ts"
export * as Fingerprint from "./Fingerprint.ts"
export * as Ledger from "./Ledger.ts"
export * as PartFiles from "./PartFiles.ts"
export * as Pipeline from "./Pipeline.ts"
export * as Progress from "./Progress.ts"
export * as Prices from "./Prices.ts"
export * as Provider from "./Provider.ts"
export * as ProviderError from "./ProviderError.ts"
export * as ProviderPlugin from "./ProviderPlugin.ts"
export * as Redact from "./Redact.ts"
export * as Request from "./Request.ts"
export * as Result from "./Result.ts"
export * as Run from "./Run.ts"
export * as RunEvent from "./RunEvent.ts"
export * as Sink from "./Sink.ts"
export * as Source from "./Source.ts"
export * as SqliteClient from "./SqliteClient.ts"
export * as Tokens from "./Tokens.ts"
