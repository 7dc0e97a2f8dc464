// Arrays for the cluster's statements (unnest of many rows in one statement).

/**
 * A PostgreSQL array literal of text values, sent as one text parameter and
 * cast in the statement (`::bigint[]`, `::text[]`). postgres.js would type an
 * array parameter from a map it fetches on a connection's first use, and one
 * sent before that goes wrong ("malformed array literal").
 */
export function textArray(values: string[]): string {
  return `{${values.map((v) => `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(",")}}`;
}

/**
 * As textArray, for values that hold no quote or backslash (decimal digits,
 * base64): no escaping pass over their bytes, which for a tail commit's
 * records is most of the statement.
 */
export function plainTextArray(values: string[]): string {
  return values.length === 0 ? "{}" : `{"${values.join('","')}"}`;
}
