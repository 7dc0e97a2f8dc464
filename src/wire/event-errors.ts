// The errors a publish batch can earn, shared by the JSON scanner and the
// FlatBuffers checks so both forms answer alike.
import { ApiError } from "../errors.js";

export function invalidEvent(index: number, message: string): ApiError {
  return new ApiError(400, "invalid_event", `event ${index}: ${message}`, { index });
}

export function fieldTooLong(index: number, name: string, fieldBytesMax: number): ApiError {
  return invalidEvent(index, `"${name}" is longer than event_field_bytes_max (${fieldBytesMax} bytes)`);
}

export function eventTooLarge(index: number, bytes: number, max: number): ApiError {
  return new ApiError(413, "event_too_large", `event ${index}: payload of ${bytes} bytes exceeds max_event_bytes (${max})`, {
    index,
    max_event_bytes: max,
  });
}

/** Thrown as soon as one event more than the limit is seen: the rest is not read. */
export function tooManyEvents(publishEventsMax: number): ApiError {
  return new ApiError(413, "batch_too_large", `more than publish_events_max (${publishEventsMax}) events`, { publish_events_max: publishEventsMax });
}

export function noEvents(): ApiError {
  return new ApiError(400, "invalid_body", "a publish request needs at least one event");
}
