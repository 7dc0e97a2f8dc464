// The formats a body travels in: what the front reads off Content-Type and
// Accept, the shard decodes and renders, and the rings carry with each
// message (None: a body that is not an event document, or no body).
export const enum ContentType {
  Json = 0,
  FlatBuffers = 1,
  None = 2,
}
