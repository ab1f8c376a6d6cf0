/**
 * Over 400 lines on purpose: most of it is the reference below (every span, attribute and metric); the
 * code that records them is `internal/telemetry.ts`.
 *
 * OpenTelemetry for runs: spans and metrics exported over OTLP/HTTP through effect's own exporters
 * (`effect/observability`), off unless configured. `layerConfig` turns it on from the standard variables — the
 * `offpeak` CLI provides it, so setting `OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318` is all a user does; from
 * code, provide `Telemetry.layerConfig` or `Telemetry.layer({ endpoint })` next to the provider and the ledger. Off,
 * nothing is loaded (the exporters are imported only when an endpoint is set), no metric is updated, and spans stay
 * the runtime's no-export native spans.
 *
 * **Spans** (one trace per run; the batch lifecycle nests as the work does):
 *
 * ```
 * offpeak.run                       offpeak.pipeline, offpeak.run.id, offpeak.provider, offpeak.mode, offpeak.run.resumed;
 * │                                 at the end offpeak.run.state, offpeak.rows, offpeak.rows.succeeded, offpeak.rows.failed,
 * │                                 offpeak.batches, offpeak.tokens.input, offpeak.tokens.output, offpeak.cost.usd
 * ├─ offpeak.source.admit           one per chunk of ≤ 2,000 rows: offpeak.rows, offpeak.rows.skipped, offpeak.rows.fresh
 * ├─ offpeak.batch                  one per batch lifecycle: offpeak.batch.id, offpeak.batch.requests, offpeak.batch.bytes,
 * │  │                              offpeak.batch.mode, offpeak.provider, offpeak.run.id; then offpeak.batch.remote_id,
 * │  │                              offpeak.batch.provider_state, offpeak.batch.completed, offpeak.batch.failed
 * │  ├─ offpeak.batch.upload        its file uploaded ahead of the create (OpenAI, Gemini files, Vertex through Cloud Storage)
 * │  │  └─ openai files.create, gemini files.upload, …
 * │  ├─ offpeak.batch.submit        reserve, create (or adopt after a crash): offpeak.batch.remote_id
 * │  │  └─ openai batches.create, openai batches.list (find, after a failed create), anthropic messages.batches.create, …
 * │  ├─ offpeak.batch.poll          the whole wait, one span: offpeak.batch.polls, offpeak.batch.provider_state, counts
 * │  │  └─ openai batches.retrieve  (one per poll)
 * │  ├─ offpeak.batch.sync          a `sync` batch's calls (one span for all of them, not one per row):
 * │  │                              offpeak.batch.requests, offpeak.batch.completed, offpeak.batch.failed
 * │  ├─ offpeak.batch.collect       results recorded: offpeak.batch.results, offpeak.batch.missing
 * │  │  └─ openai batches.retrieve, openai files.content
 * │  ├─ offpeak.part.deliver        offpeak.part.seq, offpeak.part.rows, offpeak.part.delivered, offpeak.part.dead,
 * │  │                              offpeak.part.refused, offpeak.sink
 * │  └─ offpeak.batch               the halves of a batch split for its size
 * └─ offpeak.part.deliver           parts delivered outside a batch (cached answers, bad rows, the last part)
 * ```
 *
 * Provider calls are spans named `<provider> <operation>` (`openai batches.create`, `anthropic
 * messages.batches.retrieve`, `gemini batches.get`) of kind `client`, with `offpeak.provider`, `offpeak.operation`,
 * and on error the span's status, `error.type` (`RateLimited`, `ServerError`, `Transport`, …) and
 * `http.response.status_code` when the provider answered. Each retry of a call is a span of its own. A pipeline run
 * table-to-table (pushdown) has the same `offpeak.batch` spans with `offpeak.batch.mode` `table` (collect: the
 * tally; deliver: the landing). SQL statements (the ledger's: about two thirds of all spans) are not exported unless
 * `sqlSpans` / `OFFPEAK_OTEL_SQL_SPANS=true`.
 *
 * **Metrics** (counters unless said; attributes `offpeak.pipeline` and `offpeak.provider` on each):
 * `offpeak.rows.read`, `offpeak.rows.delivered`, `offpeak.rows.failed` (dead-lettered), `offpeak.answers`
 * (`offpeak.outcome`: succeeded/failed), `offpeak.tokens` (`offpeak.token.type`: input/output/cached_input),
 * `offpeak.cost.usd` and `offpeak.cost.sync_equivalent.usd`, `offpeak.batches` (`offpeak.batch.state`: each state a
 * batch reaches — sealed, submitted, split, then how it ended: completed, expired, failed, cancelled, sync — and
 * `offpeak.batch.mode`), `offpeak.batches.in_flight` (gauge: batches this process watches now), `offpeak.retry.rounds`,
 * `offpeak.retry.requests`, `offpeak.provider.backoffs` (`offpeak.operation`), `offpeak.runs` (`offpeak.run.state`).
 * They are folded from the run's events (`RunEvent`) in one place and, like any OpenTelemetry counter, cumulative per
 * process: a resumed run counts what its own process did.
 *
 * **Configuration** (the OpenTelemetry SDK variables): `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL: `/v1/traces`,
 * `/v1/metrics` are appended), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `_METRICS_ENDPOINT` (full URLs, one signal
 * each), `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`none` turns a signal off), `OTEL_SDK_DISABLED`,
 * `OTEL_SERVICE_NAME` (default `offpeak`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS` (and per signal),
 * `OTEL_EXPORTER_OTLP_PROTOCOL` (and per signal: `http/json`, the default, or `http/protobuf`; `grpc` is refused),
 * `OTEL_EXPORTER_OTLP_COMPRESSION` (`gzip`), `OTEL_BSP_SCHEDULE_DELAY` (ms between span exports, default 5,000),
 * `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 10,000), `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`. What is
 * buffered is exported when the layer closes (at the end of the command), within 3 seconds.
 *
 * (Over 400 lines because the layer, its configuration from the environment and the metrics it exports are one
 * concept; most of it is this page.)
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Layer, Metric, Option, Schema, Tracer } from "effect"
import type { HttpClient } from "effect/http"
import type { OtlpSerialization } from "effect/observability"

/**
 * The telemetry configuration cannot be used (a variable that is not a URL, an unknown protocol): `variable` names it.
 *
 * @since 0.1.0
 * @category errors
 */
export class TelemetryError extends Schema.TaggedError<TelemetryError>()("TelemetryError", {
  variable: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/**
 * How one signal is sent: `http/json` (the default) or `http/protobuf`.
 *
 * @since 0.1.0
 * @category models
 */
export type Protocol = "http/json" | "http/protobuf"

/**
 * Where and how spans and metrics are exported.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** the collector's OTLP/HTTP base URL (`http://localhost:4318`): spans to `/v1/traces`, metrics to `/v1/metrics` */
  readonly endpoint?: string | undefined
  /** the full URL spans go to (over `endpoint`); `false`: no spans exported */
  readonly tracesEndpoint?: string | false | undefined
  /** the full URL metrics go to (over `endpoint`); `false`: no metrics exported */
  readonly metricsEndpoint?: string | false | undefined
  /** `http/json` (default) or `http/protobuf`, for both signals unless one is given its own */
  readonly protocol?: Protocol | undefined
  readonly tracesProtocol?: Protocol | undefined
  readonly metricsProtocol?: Protocol | undefined
  /** headers sent with every export (an API key of a hosted collector) */
  readonly headers?: Readonly<Record<string, string>> | undefined
  readonly tracesHeaders?: Readonly<Record<string, string>> | undefined
  readonly metricsHeaders?: Readonly<Record<string, string>> | undefined
  /** `service.name` of the resource (default `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `offpeak`) */
  readonly serviceName?: string | undefined
  readonly serviceVersion?: string | undefined
  /** more resource attributes (over `OTEL_RESOURCE_ATTRIBUTES`) */
  readonly resourceAttributes?: Readonly<Record<string, unknown>> | undefined
  readonly compression?: "gzip" | "none" | undefined
  /** how often buffered spans are sent (default 5 seconds) */
  readonly tracesInterval?: Duration.Input | undefined
  /** how often metrics are sent (default 10 seconds) */
  readonly metricsInterval?: Duration.Input | undefined
  readonly temporality?: "cumulative" | "delta" | undefined
  /** how long the last export may take when the layer closes (default 3 seconds) */
  readonly shutdownTimeout?: Duration.Input | undefined
  /**
   * Export the spans of SQL statements and transactions too (the ledger's, a SQL source's or sink's): about two
   * thirds of a run's spans, hence off by default (`OFFPEAK_OTEL_SQL_SPANS=true`)
   */
  readonly sqlSpans?: boolean | undefined
}

/**
 * True when run events update the {@link metrics} (set by {@link layer} when metrics are exported; provide
 * `Layer.succeed(Telemetry.RecordMetrics, true)` to record them for another exporter, e.g. effect's Prometheus one).
 * Off by default: a run without telemetry updates no metric.
 *
 * @since 0.1.0
 * @category references
 */
export const RecordMetrics: Context.Reference<boolean> = Context.Reference<boolean>("@offpeak/core/Telemetry/RecordMetrics", {
  defaultValue: () => false
})

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/**
 * The metrics of runs, updated from their events (see the module).
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  rowsRead: counter("offpeak.rows.read", "source rows read and admitted"),
  rowsDelivered: counter("offpeak.rows.delivered", "rows written to the sink"),
  rowsFailed: counter("offpeak.rows.failed", "rows written to the dead letter"),
  answers: counter("offpeak.answers", "answers recorded, by offpeak.outcome (a failed one may be retried)"),
  tokens: counter("offpeak.tokens", "tokens of the answers paid for, by offpeak.token.type"),
  cost: counter("offpeak.cost.usd", "USD spent on answers at the price of the mode they were sent in"),
  costSyncEquivalent: counter("offpeak.cost.sync_equivalent.usd", "USD the same answers would have cost synchronously"),
  batches: counter("offpeak.batches", "batches reaching each offpeak.batch.state (sealed, submitted, split, how they ended)"),
  batchesInFlight: Metric.gauge("offpeak.batches.in_flight", { description: "batches this process watches at the provider now" }),
  retryRounds: counter("offpeak.retry.rounds", "retry rounds started"),
  retryRequests: counter("offpeak.retry.requests", "requests sent again by retry rounds"),
  backoffs: counter("offpeak.provider.backoffs", "provider calls that failed transiently and wait to be tried again"),
  runs: counter("offpeak.runs", "runs ended, by offpeak.run.state")
} as const

/** what a provider error says about the HTTP answer, as span attributes */
const errorAttributes = (error: unknown): Record<string, unknown> => {
  if (typeof error !== "object" || error === null || (error as { _tag?: unknown })._tag !== "ProviderError") return {}
  const reason = (error as { reason: { _tag: string; status?: number } }).reason
  const status = reason._tag === "RateLimited" ? 429 : reason._tag === "NotFound" ? 404 : reason.status
  return status === undefined ? { "error.type": reason._tag } : { "error.type": reason._tag, "http.response.status_code": status }
}

/**
 * Wraps one provider call in a span `<provider> <operation>` (kind `client`); a failure adds `error.type` and, when
 * the provider answered, `http.response.status_code`. Adapters put it in their one call helper.
 *
 * @example
 * ```ts
 * Effect.tryPromise({ try: f, catch: toProviderError(operation) }).pipe(Telemetry.providerCall("openai", operation))
 * ```
 *
 * @since 0.1.0
 * @category spans
 */
export const providerCall = (provider: string, operation: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  self.pipe(
    Effect.tapError((error) => Effect.annotateCurrentSpan(errorAttributes(error))),
    Effect.withSpan(`${provider} ${operation}`, {
      kind: "client",
      attributes: { "offpeak.provider": provider, "offpeak.operation": operation }
    }, { captureStackTrace: false })
  )

// ----- the exporters -----

const trimmed = (value: string | undefined) => value === undefined || value.trim() === "" ? undefined : value.trim()

const urlOf = (variable: string, value: string): Effect.Effect<string, TelemetryError> => {
  const url = URL.parse(value)
  return url !== null && (url.protocol === "http:" || url.protocol === "https:")
    ? Effect.succeed(url.toString())
    : Effect.fail(new TelemetryError({ variable, message: `${variable} is not an http(s) URL: ${JSON.stringify(value)}` }))
}

/** `<base>/v1/<signal>`, as the OpenTelemetry specification builds a signal's URL from the base endpoint */
const signalUrl = (base: string, signal: "traces" | "metrics") => {
  const url = new URL(base)
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/v1/${signal}`
  return url.toString()
}

const protocolOf = (variable: string, value: string | undefined): Effect.Effect<Protocol | undefined, TelemetryError> => {
  if (value === undefined || value === "http/json" || value === "http/protobuf") return Effect.succeed(value)
  return Effect.fail(
    new TelemetryError({
      variable,
      message: value === "grpc"
        ? `${variable}=grpc: offpeak exports OTLP over HTTP only; point the endpoint at the collector's OTLP/HTTP port ` +
          `(4318) and set ${variable}=http/json or http/protobuf`
        : `${variable} is "${value}": use http/json or http/protobuf`
    })
  )
}

/** `k1=v1,k2=v2` with percent-encoded values (the OpenTelemetry list format) */
const listOf = (value: string | undefined): Record<string, string> | undefined => {
  if (value === undefined) return undefined
  const out: Record<string, string> = {}
  for (const entry of value.split(",")) {
    const eq = entry.indexOf("=")
    if (eq <= 0) continue
    const key = entry.slice(0, eq).trim()
    const raw = entry.slice(eq + 1).trim()
    try {
      out[key] = decodeURIComponent(raw)
    } catch {
      out[key] = raw
    }
  }
  return out
}

const intervalOf = (variable: string, value: string | undefined): Effect.Effect<Duration.Duration | undefined, TelemetryError> => {
  if (value === undefined) return Effect.succeed(undefined)
  const ms = Number(value)
  return Number.isFinite(ms) && ms >= 0
    ? Effect.succeed(Duration.millis(ms))
    : Effect.fail(new TelemetryError({ variable, message: `${variable} is not a number of milliseconds: ${JSON.stringify(value)}` }))
}

/**
 * The options the standard OpenTelemetry variables give (see the module), or none when no endpoint is set, every
 * signal's exporter is `none`, or `OTEL_SDK_DISABLED` is true.
 *
 * @since 0.1.0
 * @category config
 */
export const optionsFromEnv: Effect.Effect<Option.Option<Options>, TelemetryError> = Effect.gen(function*() {
  const names = [
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OFFPEAK_OTEL_SQL_SPANS"
  ] as const
  const values = yield* Config.all(
    Object.fromEntries(names.map((name) => [name, Config.option(Config.String(name))])) as {
      readonly [K in typeof names[number]]: Config.Config<Option.Option<string>>
    }
  ).pipe(Effect.mapError((e) => new TelemetryError({ message: `OpenTelemetry configuration: ${e.message}` })))
  const env = (name: typeof names[number]) => trimmed(Option.getOrUndefined(values[name]))

  if (/^true$/i.test(env("OTEL_SDK_DISABLED") ?? "")) return Option.none()
  const base = env("OTEL_EXPORTER_OTLP_ENDPOINT")
  if (base !== undefined) yield* urlOf("OTEL_EXPORTER_OTLP_ENDPOINT", base)
  const endpointOf = (signal: "TRACES" | "METRICS") =>
    Effect.gen(function*() {
      const exporters = (env(`OTEL_${signal}_EXPORTER`) ?? "otlp").split(",").map((s) => s.trim().toLowerCase())
      if (!exporters.includes("otlp")) return false as const
      const own = env(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`)
      if (own !== undefined) return yield* urlOf(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`, own)
      return base === undefined ? false as const : signalUrl(base, signal === "TRACES" ? "traces" : "metrics")
    })
  const tracesEndpoint = yield* endpointOf("TRACES")
  const metricsEndpoint = yield* endpointOf("METRICS")
  if (tracesEndpoint === false && metricsEndpoint === false) return Option.none()

  const compression = env("OTEL_EXPORTER_OTLP_COMPRESSION")
  if (compression !== undefined && compression !== "gzip" && compression !== "none") {
    return yield* new TelemetryError({ variable: "OTEL_EXPORTER_OTLP_COMPRESSION", message: `OTEL_EXPORTER_OTLP_COMPRESSION is "${compression}": use gzip or none` })
  }
  const temporality = env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")?.toLowerCase()
  if (temporality !== undefined && temporality !== "cumulative" && temporality !== "delta") {
    return yield* new TelemetryError({
      variable: "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
      message: `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is "${temporality}": use cumulative or delta`
    })
  }
  return Option.some<Options>({
    tracesEndpoint,
    metricsEndpoint,
    protocol: yield* protocolOf("OTEL_EXPORTER_OTLP_PROTOCOL", env("OTEL_EXPORTER_OTLP_PROTOCOL")),
    tracesProtocol: yield* protocolOf("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")),
    metricsProtocol: yield* protocolOf("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")),
    headers: listOf(env("OTEL_EXPORTER_OTLP_HEADERS")),
    tracesHeaders: listOf(env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")),
    metricsHeaders: listOf(env("OTEL_EXPORTER_OTLP_METRICS_HEADERS")),
    compression,
    tracesInterval: yield* intervalOf("OTEL_BSP_SCHEDULE_DELAY", env("OTEL_BSP_SCHEDULE_DELAY")),
    metricsInterval: yield* intervalOf("OTEL_METRIC_EXPORT_INTERVAL", env("OTEL_METRIC_EXPORT_INTERVAL")),
    temporality,
    sqlSpans: /^(true|1)$/i.test(env("OFFPEAK_OTEL_SQL_SPANS") ?? "")
  })
})

/** the names `effect/sql` gives its spans: statements (`sqlite`, `postgresql`, or `sql.execute`) and transactions (and `Migrator <n>_<name>` its migrations) */
const SQL_SPANS = new Set(["sql.execute", "sql.transaction", "sqlite", "postgresql", "mysql", "mssql"])

/** a tracer that does not sample SQL spans (they are made, and dropped before export) */
const withoutSql = (tracer: Tracer.Tracer): Tracer.Tracer =>
  Tracer.make({
    span: (options) =>
      tracer.span(SQL_SPANS.has(options.name) || options.name.startsWith("Migrator ") ? { ...options, sampled: false } : options),
    context: tracer.context
  })

/**
 * Exports spans and metrics to an OTLP/HTTP collector (see the module for what is exported). The exporters
 * (`effect/observability`) are loaded when the layer is built; what is buffered is sent when it closes. Variables of
 * the resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) apply here too.
 *
 * @example
 * ```ts
 * Pipeline.run(triage).pipe(Effect.provide(Layer.mergeAll(provider, ledger, Telemetry.layer({ endpoint: "http://localhost:4318" }))))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<never, TelemetryError> =>
  Layer.unwrap(Effect.gen(function*() {
    const tracesUrl = options.tracesEndpoint === false
      ? undefined
      : options.tracesEndpoint !== undefined
      ? yield* urlOf("tracesEndpoint", options.tracesEndpoint)
      : options.endpoint !== undefined
      ? signalUrl(yield* urlOf("endpoint", options.endpoint), "traces")
      : undefined
    const metricsUrl = options.metricsEndpoint === false
      ? undefined
      : options.metricsEndpoint !== undefined
      ? yield* urlOf("metricsEndpoint", options.metricsEndpoint)
      : options.endpoint !== undefined
      ? signalUrl(yield* urlOf("endpoint", options.endpoint), "metrics")
      : undefined
    if (tracesUrl === undefined && metricsUrl === undefined) return Layer.empty

    // the service's name: given, else the environment's (read by the exporters), else offpeak
    const envName = trimmed(Option.getOrUndefined(yield* Config.option(Config.String("OTEL_SERVICE_NAME")).pipe(Effect.orElseSucceed(Option.none))))
    const envAttributes = trimmed(Option.getOrUndefined(yield* Config.option(Config.String("OTEL_RESOURCE_ATTRIBUTES")).pipe(Effect.orElseSucceed(Option.none))))
    const named = options.serviceName !== undefined || envName !== undefined || /(^|,)\s*service\.name\s*=/.test(envAttributes ?? "")
    const resource = {
      serviceName: options.serviceName ?? (named ? undefined : "offpeak"),
      serviceVersion: options.serviceVersion,
      ...(options.resourceAttributes !== undefined ? { attributes: { ...options.resourceAttributes } } : {})
    }

    const [{ OtlpExporter, OtlpMetrics, OtlpSerialization, OtlpTracer }, { FetchHttpClient }] = yield* Effect.promise(() =>
      Promise.all([import("effect/observability"), import("effect/http")])
    )
    const serialization = (protocol: Protocol | undefined): Layer.Layer<OtlpSerialization.OtlpSerialization> =>
      protocol === "http/protobuf" ? OtlpSerialization.layerProtobuf : OtlpSerialization.layerJson
    const shutdownTimeout = options.shutdownTimeout ?? "3 seconds"
    const layers: Array<Layer.Layer<never, never, HttpClient.HttpClient>> = []
    if (tracesUrl !== undefined) {
      const tracer = OtlpTracer.make({
        url: tracesUrl,
        resource,
        headers: { ...options.headers, ...options.tracesHeaders },
        compression: options.compression,
        exportInterval: options.tracesInterval,
        shutdownTimeout
      })
      layers.push(
        Layer.effect(Tracer.Tracer, options.sqlSpans === true ? tracer : Effect.map(tracer, withoutSql)).pipe(
          Layer.provideMerge(OtlpExporter.layerFlusher),
          Layer.provide(serialization(options.tracesProtocol ?? options.protocol))
        )
      )
    }
    if (metricsUrl !== undefined) {
      layers.push(OtlpMetrics.layer({
        url: metricsUrl,
        resource,
        headers: { ...options.headers, ...options.metricsHeaders },
        compression: options.compression,
        exportInterval: options.metricsInterval,
        temporality: options.temporality,
        shutdownTimeout
      }).pipe(Layer.provide(serialization(options.metricsProtocol ?? options.protocol))))
      layers.push(Layer.succeed(RecordMetrics, true))
    }
    return Layer.mergeAll(Layer.empty, ...layers).pipe(Layer.provide(FetchHttpClient.layer))
  }))

/**
 * {@link layer} from the standard OpenTelemetry variables ({@link optionsFromEnv}); nothing at all when no endpoint
 * is set. The `offpeak` CLI provides it to every command.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<never, TelemetryError> = Layer.unwrap(
  Effect.map(optionsFromEnv, Option.match({ onNone: () => Layer.empty, onSome: layer }))
)
