/**
 * A TCP proxy on 127.0.0.1 whose connections a test can cut, to drop a live gRPC stream the way a
 * network failure or a restarted load balancer would, while the server stays up.
 */

import { connect, createServer, type Server, type Socket } from "node:net";
import { once } from "node:events";

/** Forwards every connection to `target` (host:port); `drop()` cuts the open ones, new
 * connections are still accepted. */
export class Proxy {
  private readonly server: Server;
  private open: Socket[] = [];

  private constructor(server: Server) {
    this.server = server;
  }

  /** A proxy listening on a free port of 127.0.0.1. */
  static async start(target: string): Promise<Proxy> {
    const colon = target.lastIndexOf(":");
    const host = target.slice(0, colon);
    const port = Number(target.slice(colon + 1));
    const server = createServer();
    const proxy = new Proxy(server);
    server.on("connection", (downstream) => {
      const upstream = connect(port, host);
      for (const [source, sink] of [
        [downstream, upstream],
        [upstream, downstream],
      ] as const) {
        source.pipe(sink);
        source.on("error", () => sink.destroy());
        source.on("close", () => sink.destroy());
      }
      proxy.open.push(downstream, upstream);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return proxy;
  }

  /** The proxy's host:port. */
  get address(): string {
    const bound = this.server.address();
    if (bound === null || typeof bound === "string") {
      throw new Error("the proxy is not listening on a TCP port");
    }
    return `127.0.0.1:${bound.port}`;
  }

  /** Cuts every open connection; returns how many sockets were cut. */
  drop(): number {
    const cut = this.open.filter((socket) => !socket.destroyed);
    this.open = [];
    for (const socket of cut) {
      socket.resetAndDestroy();
    }
    return cut.length;
  }

  /** Stops listening and cuts every connection. */
  async stop(): Promise<void> {
    this.drop();
    this.server.close();
    await once(this.server, "close");
  }
}
