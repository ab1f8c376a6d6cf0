/**
 * What a schema says about CSV columns: which ones it requires in the header,
 * which ones are optional (an empty cell there means "absent"), and which ones
 * it knows at all.
 *
 * @internal
 */
import type { Schema } from "effect"
import { SchemaAST } from "effect"

/** @internal */
export interface Columns {
  /** columns the header must have */
  readonly required: ReadonlySet<string>
  /** optional keys: an empty cell leaves the key out */
  readonly optional: ReadonlySet<string>
  /** every key the schema names; `undefined` when it takes any key */
  readonly known: ReadonlySet<string> | undefined
}

const resolve = (ast: SchemaAST.AST): SchemaAST.AST => (SchemaAST.isSuspend(ast) ? resolve(ast.thunk()) : ast)

const analyse = (ast: SchemaAST.AST): Columns => {
  const encoded = resolve(SchemaAST.toEncoded(ast))
  if (SchemaAST.isObjects(encoded)) {
    const required = new Set<string>()
    const optional = new Set<string>()
    for (const ps of encoded.propertySignatures) {
      if (typeof ps.name !== "string") continue
      if (SchemaAST.isOptional(ps.type)) optional.add(ps.name)
      else required.add(ps.name)
    }
    const known = encoded.indexSignatures.length > 0 ? undefined : new Set([...required, ...optional])
    return { required, optional, known }
  }
  if (SchemaAST.isUnion(encoded) && encoded.types.length > 0) {
    // required: by every member; optional: by no member required
    const members = encoded.types.map(analyse)
    const anyRequired = new Set(members.flatMap((m) => [...m.required]))
    const required = new Set([...anyRequired].filter((c) => members.every((m) => m.required.has(c))))
    const optional = new Set(members.flatMap((m) => [...m.optional]).filter((c) => !anyRequired.has(c)))
    const known = members.every((m) => m.known !== undefined)
      ? new Set(members.flatMap((m) => [...m.known!]))
      : undefined
    return { required, optional, known }
  }
  return { required: new Set(), optional: new Set(), known: undefined }
}

/** @internal */
export const fromSchema = (schema: Schema.Top): Columns => analyse(schema.ast)
