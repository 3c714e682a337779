import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's scrape endpoint: SwiftNIO's HTTP/1 server answering `GET /metrics` (and HEAD)
/// with what `render` returns, in the Prometheus text format; any other path is a 404 naming
/// /metrics, any other method a 405. `render` may block (the host answers it on its own thread),
/// so it runs on a small thread pool, never on the event loop. It touches nothing but its sockets
/// and `render`: it knows no host, and no data path ever waits for it.
public final class MetricsHTTPServer: Sendable {
    /// The exposition to serve now. Called once per scrape, on a pool thread; an error it throws
    /// is answered 503 with its description (the scraper records the target down).
    public typealias Render = @Sendable () throws -> [UInt8]

    /// The Prometheus text format's content type (exposition format 0.0.4).
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let group: MultiThreadedEventLoopGroup
    private let pool: NIOThreadPool
    private let channel: any Channel
    /// Where it listens (with the port the kernel chose when asked for port 0).
    public let address: MetricsListenAddress

    private init(group: MultiThreadedEventLoopGroup, pool: NIOThreadPool, channel: any Channel, address: MetricsListenAddress) {
        self.group = group
        self.pool = pool
        self.channel = channel
        self.address = address
    }

    /// Binds `address` and serves until `stop()`. Throws if the address cannot be bound (in use,
    /// not local, a name that does not resolve), with the system's reason.
    public static func start(on address: MetricsListenAddress, render: @escaping Render) throws -> MetricsHTTPServer {
        // One loop and one pool thread: a scrape a second is the expected load, and the host's
        // cores belong to its data path.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        do {
            let channel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 16)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(MetricsRequestHandler(pool: pool, render: render))
                    }
                }
                .bind(host: address.host, port: address.port).wait()
            let bound = MetricsListenAddress(host: address.host, port: channel.localAddress?.port ?? address.port)
            return MetricsHTTPServer(group: group, pool: pool, channel: channel, address: bound)
        } catch {
            try? pool.syncShutdownGracefully()
            try? group.syncShutdownGracefully()
            throw MetricsListenError(address: address, underlying: error)
        }
    }

    /// Closes the listener and its connections, and stops the threads.
    public func stop() {
        try? channel.close().wait()
        try? pool.syncShutdownGracefully()
        try? group.syncShutdownGracefully()
    }
}

/// One HTTP connection's requests: each complete request gets one response, in order (NIO's
/// pipelining handler holds the next request until this one is answered).
private final class MetricsRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let pool: NIOThreadPool
    private let render: MetricsHTTPServer.Render
    private var head: HTTPRequestHead?

    init(pool: NIOThreadPool, render: @escaping MetricsHTTPServer.Render) {
        self.pool = pool
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request): head = request
        case .body: break  // a scrape has no body; one sent is ignored
        case .end:
            guard let request = head else { return }
            head = nil
            answer(request, context: context)
        }
    }

    private func answer(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else {
            return respond(
                .notFound, body: Array("no such path '\(path)': the metrics are at /metrics\n".utf8), to: request, context: context)
        }
        guard request.method == .GET || request.method == .HEAD else {
            return respond(
                .methodNotAllowed, body: Array("\(request.method) is not served: scrape /metrics with GET\n".utf8), to: request,
                context: context, extraHeaders: [("Allow", "GET, HEAD")])
        }
        let render = self.render
        pool.runIfActive(eventLoop: context.eventLoop) { try render() }
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let body):
                    self.respond(.ok, body: body, to: request, context: context, contentType: MetricsHTTPServer.contentType)
                case .failure(let error):
                    self.respond(.serviceUnavailable, body: Array("metrics unavailable: \(error)\n".utf8), to: request, context: context)
                }
            }
    }

    private func respond(
        _ status: HTTPResponseStatus, body: [UInt8], to request: HTTPRequestHead, context: ChannelHandlerContext,
        contentType: String = "text/plain; charset=utf-8", extraHeaders: [(String, String)] = []
    ) {
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.count)")] + extraHeaders)
        let keepAlive = request.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            done.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// Why the endpoint could not listen, in the operator's words: the address, and the system's
/// reason (in use, not this machine's, a name that does not resolve).
public struct MetricsListenError: Error, CustomStringConvertible {
    public let address: MetricsListenAddress
    public let reason: String

    init(address: MetricsListenAddress, underlying error: any Error) {
        self.address = address
        if let io = error as? IOError {
            reason = String(cString: strerror(io.errnoCode))
        } else if error is SocketAddressError {
            reason = "'\(address.host)' is not an address of this machine or a name that resolves"
        } else {
            reason = "\(error)"
        }
    }

    public var description: String { "cannot serve metrics on \(address): \(reason)" }
}
