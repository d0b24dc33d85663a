//! What the gateway knows about each public RPC, read from the embedded descriptor set rather
//! than written per method: which upstream serves it, whether it streams, whether it needs a token
//! and which rate limit applies.

use std::collections::HashMap;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The upstream service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// `auth.v1.AuthService`.
    Auth,
    /// `chat.v1.ChatService`.
    Chat,
    /// `group.v1.GroupService`.
    Group,
}

/// Which rate limit a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Per client address: logins, registrations, refreshes.
    Login,
    /// Per user: message sends.
    Send,
    /// Per user: keys forwarded to the user's other devices (ForwardKeys).
    ForwardKeys,
    /// Per client address: the other public methods (GetJwks).
    Public,
}

/// One routable RPC.
#[derive(Debug, Clone)]
pub struct Method {
    /// Where it goes.
    pub upstream: Upstream,
    /// Whether the client streams requests.
    pub client_streaming: bool,
    /// Whether the server streams responses.
    pub server_streaming: bool,
    /// Whether it may be called without an access token.
    pub public: bool,
    /// The rate limit it counts against, if any.
    pub rate_limit: Option<RateLimit>,
}

impl Method {
    /// Neither side streams: the gateway bounds such a call with its unary timeout.
    pub fn is_unary(&self) -> bool {
        !self.client_streaming && !self.server_streaming
    }
}

/// RPCs callable without an access token: you cannot have one before logging in.
const PUBLIC_METHODS: &[&str] = &[
    "/auth.v1.AuthService/Register",
    "/auth.v1.AuthService/Login",
    "/auth.v1.AuthService/Refresh",
    "/auth.v1.AuthService/GetJwks",
];

const LOGIN_LIMITED: &[&str] = &[
    "/auth.v1.AuthService/Register",
    "/auth.v1.AuthService/Login",
    "/auth.v1.AuthService/Refresh",
];

const SEND_LIMITED: &[&str] = &["/chat.v1.ChatService/SendMessage"];

const FORWARD_KEYS_LIMITED: &[&str] = &["/chat.v1.ChatService/ForwardKeys"];

/// Every routable RPC by its HTTP path (`/package.Service/Method`).
#[derive(Debug, Clone)]
pub struct MethodTable {
    by_path: HashMap<String, Method>,
}

impl MethodTable {
    /// Reads the public services (`proto::PUBLIC_SERVICES`) from the embedded descriptor set.
    ///
    /// # Panics
    /// When the embedded descriptor set does not decode or lacks a public service: a build
    /// problem that every test catches.
    pub fn from_embedded_descriptors() -> Self {
        let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes");
        let mut by_path = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                let full_name = format!("{}.{}", file.package(), service.name());
                let Some(upstream) = upstream_of(&full_name) else {
                    continue;
                };
                for method in &service.method {
                    let path = format!("/{full_name}/{}", method.name());
                    let public = PUBLIC_METHODS.contains(&path.as_str());
                    let rate_limit = if LOGIN_LIMITED.contains(&path.as_str()) {
                        Some(RateLimit::Login)
                    } else if SEND_LIMITED.contains(&path.as_str()) {
                        Some(RateLimit::Send)
                    } else if FORWARD_KEYS_LIMITED.contains(&path.as_str()) {
                        Some(RateLimit::ForwardKeys)
                    } else if public {
                        Some(RateLimit::Public)
                    } else {
                        None
                    };
                    let entry = Method {
                        upstream,
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                        public,
                        rate_limit,
                    };
                    by_path.insert(path, entry);
                }
            }
        }
        assert!(
            [Upstream::Auth, Upstream::Chat, Upstream::Group]
                .iter()
                .all(|upstream| by_path.values().any(|method| method.upstream == *upstream)),
            "every public service has methods in the descriptor set"
        );
        Self { by_path }
    }

    /// The RPC at `path`, if it is routable.
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path)
    }
}

fn upstream_of(service: &str) -> Option<Upstream> {
    match service {
        "auth.v1.AuthService" => Some(Upstream::Auth),
        "chat.v1.ChatService" => Some(Upstream::Chat),
        "group.v1.GroupService" => Some(Upstream::Group),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_knows_streaming_shapes_publicity_and_limits() {
        let table = MethodTable::from_embedded_descriptors();

        let login = table.get("/auth.v1.AuthService/Login").unwrap();
        let open_stream = table.get("/chat.v1.ChatService/OpenStream").unwrap();
        let subscribe = table.get("/chat.v1.ChatService/Subscribe").unwrap();
        let send = table.get("/chat.v1.ChatService/SendMessage").unwrap();

        assert!(login.public && login.is_unary() && login.rate_limit == Some(RateLimit::Login));
        assert!(
            open_stream.client_streaming && open_stream.server_streaming && !open_stream.public
        );
        assert!(!subscribe.client_streaming && subscribe.server_streaming);
        assert_eq!(send.rate_limit, Some(RateLimit::Send));
        assert_eq!(
            table
                .get("/chat.v1.ChatService/ForwardKeys")
                .unwrap()
                .rate_limit,
            Some(RateLimit::ForwardKeys)
        );
        assert_eq!(
            table
                .get("/auth.v1.AuthService/GetJwks")
                .unwrap()
                .rate_limit,
            Some(RateLimit::Public)
        );
        assert_eq!(
            table
                .get("/group.v1.GroupService/CreateGroup")
                .unwrap()
                .upstream,
            Upstream::Group
        );
    }

    #[test]
    fn internal_and_unknown_services_are_not_routable() {
        let table = MethodTable::from_embedded_descriptors();

        assert!(
            table
                .get("/auth.internal.v1.AuthInternalService/GetActiveDevices")
                .is_none()
        );
        assert!(
            table
                .get("/group.internal.v1.GroupInternalService/GetMembership")
                .is_none()
        );
        assert!(table.get("/nope.v1.Nope/Nothing").is_none());
    }
}
