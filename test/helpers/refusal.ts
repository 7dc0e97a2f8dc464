// The ApiError a call or promise refuses with; anything else (or no refusal) fails the test.
import { ApiError } from "../../src/errors.js";

export async function refusal(p: Promise<unknown> | (() => unknown)): Promise<ApiError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error("expected a refusal");
}
