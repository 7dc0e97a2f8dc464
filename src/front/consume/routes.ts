// The consume WebSocket route on the uWS app: the upgrade (refused with an
// HTTP error when the front alone can tell), then each socket event to the hub.
import uWS from "uWebSockets.js";
import { ApiError } from "../../errors.js";
import type { GuardedApp } from "../auth.js";
import { exchange, logAccess, markDone, sendError } from "../http.js";
import type { ConsumeHub } from "./hub.js";
import { CLIENT_MESSAGE_BYTES_MAX, parseParams, type ConsumeParams } from "./params.js";
import type { SocketData } from "./state.js";
import type { ClusterRuntime } from "../cluster-runtime.js";
import { routeInCluster } from "../cluster.js";

/**
 * Largest client message uWS takes (maxPayloadLength): on a larger one it
 * closes the socket (1009) without a word. Four times the bound, so a message
 * somewhat over it still reaches parseClientMessage and is answered 413
 * message_too_large.
 */
const SOCKET_PAYLOAD_BYTES_MAX = 4 * CLIENT_MESSAGE_BYTES_MAX;

/** The WebSocket route: upgrade only once the shard has said where the consumer starts. */
export function consumeRoute(routes: GuardedApp, hub: ConsumeHub, isReady: () => boolean, cluster: () => ClusterRuntime | null): void {
  routes.ws<SocketData>("/v1/streams/:id/consume", "consume", {
    compression: uWS.DISABLED,
    maxPayloadLength: SOCKET_PAYLOAD_BYTES_MAX,
    maxBackpressure: hub.socketBytesMax,
    closeOnBackpressureLimit: 0,
    // Liveness is the hub's own (pings, takeover, idle timeout).
    idleTimeout: 0,
    sendPingsAutomatically: false,
    upgrade: (res, req, context) => {
      const x = exchange(res);
      if (!isReady()) return sendError(x, new ApiError(503, "not_ready", "the server is still recovering its streams"));
      if (hub.closing) return sendError(x, new ApiError(503, "shutting_down", "the server is shutting down; retry on another node or after the restart"));
      let params: ConsumeParams;
      try {
        params = parseParams(hub.config, req.getParameter(0) ?? "", req.getQuery() ?? "");
      } catch (err) {
        return sendError(x, err as ApiError);
      }
      // A stream served by another node: refused with its URL (307, Location), the client reconnects there.
      const rt = cluster();
      if (rt && !routeInCluster(x, rt, params.stream, req.getUrl(), req.getQuery() ?? "")) return;
      if (!hub.admit()) {
        const max = hub.consumersMax;
        return sendError(x, new ApiError(429, "server_busy", `consumers_max (${max}) consumers are connected; retry later`, { consumers_max: max }));
      }
      markDone(x);
      logAccess(res, 101, 0);
      res.upgrade<SocketData>(
        { params },
        req.getHeader("sec-websocket-key"),
        req.getHeader("sec-websocket-protocol"),
        req.getHeader("sec-websocket-extensions"),
        context,
      );
    },
    open: (ws) => hub.open(ws),
    message: (ws, data, isBinary) => hub.message(ws, data, isBinary),
    drain: (ws) => hub.drain(ws),
    pong: (ws) => hub.pong(ws),
    close: (ws) => hub.close(ws),
  });
}
