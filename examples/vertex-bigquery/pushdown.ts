/**
 * The job of the Vertex-from-BigQuery example, defined once: a BigQuery table
 * of product descriptions → a Gemini classification with a typed output
 * schema → a BigQuery results table, pushed down (the requests are built by
 * BigQuery, the answers decoded and MERGEd by BigQuery: no row passes through
 * offpeak). `run.ts` drives it; the declarative pipeline form will use the
 * same value once the core pushdown runner lands.
 */
import { BigQuery, Pushdown } from "@offpeak/sources/bigquery"
import { Schema } from "effect"

/** the categories a product falls in */
export const CATEGORIES = ["electronics", "kitchen", "toys", "garden", "clothing", "sports", "office", "beauty"] as const

/** what the model answers for one product: the target table's columns, checked in BigQuery before they land */
export const Classification = Schema.Struct({
  category: Schema.Literals(CATEGORIES),
  audience: Schema.Literals(["kids", "adults", "everyone"]),
  confidence: Schema.Number,
  summary: Schema.String
})

/** the datasets and tables (in the job's project) */
export const TABLES = {
  source: "shop.products",
  target: "shop.product_categories",
  staging: "offpeak_jobs"
} as const

/** the pushed-down job: every product of `shop.products`, keyed by `sku` */
export const classify = (connection?: BigQuery.Connection) =>
  BigQuery.pushdown({
    source: { table: TABLES.source },
    key: "sku",
    request: Pushdown.chat({
      model: "gemini-2.5-flash",
      system: `You classify products of an online shop. Pick one category among ${CATEGORIES.join(", ")}, who it is for, how sure you are (0 to 1), and summarise it in under 12 words.`,
      prompt: "CONCAT('Title: ', title, '\\nDescription: ', description)",
      maxTokens: 256,
      temperature: 0,
      output: { name: "Classification", schema: Classification }
    }),
    target: { table: TABLES.target },
    dataset: TABLES.staging,
    connection
  })
