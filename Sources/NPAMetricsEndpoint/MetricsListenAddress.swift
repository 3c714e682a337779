/// Where a metrics endpoint listens, as an operator writes it: `HOST:PORT` (`127.0.0.1:9464`,
/// `[::1]:9464`, `localhost:9464`) or `:PORT` for every IPv4 interface (`[::]:PORT`: IPv6 too), as
/// Prometheus exporters take it. Port 0 asks the kernel for a free one (the endpoint says which it got).
public struct MetricsListenAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Why a listen address does not parse; each says what a good one looks like.
    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case noPort(String)
        case badPort(String)
        case unclosedBracket(String)
        case url(String)

        public var description: String {
            switch self {
            case .noPort(let text): "metrics address '\(text)' has no port: write HOST:PORT (127.0.0.1:9464) or :PORT"
            case .badPort(let text): "metrics address '\(text)': the port must be a number from 0 to 65535"
            case .unclosedBracket(let text): "metrics address '\(text)': an IPv6 host goes in brackets, [::1]:9464"
            case .url(let text):
                "metrics address '\(text)' is a URL: give the HOST:PORT to listen on (127.0.0.1:9464); it serves /metrics there"
            }
        }
    }

    public init(parsing text: String) throws(ParseError) {
        guard !text.contains("://") else { throw .url(text) }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .unclosedBracket(text) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .noPort(text) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .noPort(text) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else { throw .badPort(text) }
        self.init(host: host.isEmpty ? "0.0.0.0" : String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
