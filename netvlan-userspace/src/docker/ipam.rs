//! `--ipam-driver netvlan`: Docker's remote IPAM protocol served by
//! netvlan's IPAM, so the CLI and Docker hand out one network's
//! addresses from one allocator (no address twice, `network inspect`
//! sees Docker's).
//!
//! Docker asks for the pool and the gateway before CreateNetwork, and
//! for endpoint addresses after it. Pools are not stored: the PoolID
//! carries the subnet and `--ip-range`. An address is answered from the
//! netvlan network that has the pool's subnet when there is one (the
//! gateway it has; an endpoint's address allocated and held until
//! CreateEndpoint takes it, see [`Manager::hold_address`]); before the
//! network exists only the gateway and the addresses Docker names (aux
//! addresses, which CreateNetwork then reserves) are answered.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::{
    protocol::{
        ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestPoolRequest,
        GATEWAY_ADDRESS, REQUEST_ADDRESS_TYPE,
    },
    DockerError, Plugin,
};
use crate::{
    control::{Manager, NetworkRecord},
    ipam::{self, Family, Request},
};

/// The address spaces Docker's `docker network create` falls back on.
pub const ADDRESS_SPACES: (&str, &str) = ("netvlan-local", "netvlan-global");

/// A pool as its PoolID carries it: `SUBNET` or `SUBNET@RANGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pool {
    subnet: IpNet,
    range: Option<IpNet>,
}

impl Pool {
    fn id(&self) -> String {
        match self.range {
            Some(range) => format!("{}@{range}", self.subnet),
            None => self.subnet.to_string(),
        }
    }

    fn parse(id: &str) -> Result<Pool, DockerError> {
        let bad = || DockerError::Ipam(format!("PoolID {id:?} is not one netvlan's IPAM gave"));
        let (subnet, range) = match id.split_once('@') {
            Some((subnet, range)) => (subnet, Some(range.parse().map_err(|_| bad())?)),
            None => (id, None),
        };
        Ok(Pool {
            subnet: subnet.parse().map_err(|_| bad())?,
            range,
        })
    }

    /// `ip` with the pool's prefix length, as Docker takes addresses.
    fn prefixed(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", self.subnet.prefix_len())
    }
}

/// The netvlan network that has `subnet`, if one has (subnets of netvlan
/// networks never overlap, so at most one).
fn network_with(manager: &Manager, subnet: &IpNet) -> Result<Option<NetworkRecord>, DockerError> {
    Ok(manager.networks()?.into_iter().find(|r| {
        r.ipam
            .config()
            .subnets()
            .iter()
            .any(|s| s.subnet == *subnet)
    }))
}

fn parse_ip(text: &str) -> Result<IpAddr, DockerError> {
    ipam::parse_ip(text).map_err(|e| DockerError::Ipam(e.to_string()))
}

/// RequestAddress's answer: `address` in CIDR form.
fn answer(address: String) -> Value {
    json!({ "Address": address, "Data": {} })
}

/// RequestPool: Docker's `--subnet` (netvlan's IPAM picks none itself:
/// the subnet is the LAN's, which only the user knows) and `--ip-range`.
fn request_pool(request: &RequestPoolRequest) -> Result<Pool, DockerError> {
    if request.pool.is_empty() {
        return Err(DockerError::Ipam(
            "netvlan's IPAM needs the LAN's subnet: give --subnet (and --gateway) to docker network create".into(),
        ));
    }
    let subnet: IpNet = request
        .pool
        .parse()
        .map_err(|_| DockerError::Ipam(format!("pool {:?} is not a CIDR", request.pool)))?;
    if subnet.trunc() != subnet {
        return Err(DockerError::Ipam(format!(
            "pool {subnet} has host bits set: did you mean {}?",
            subnet.trunc()
        )));
    }
    if request.v6 != matches!(subnet, IpNet::V6(_)) {
        return Err(DockerError::Ipam(format!(
            "pool {subnet} is not of the family Docker asked for"
        )));
    }
    let range = match request.sub_pool.as_str() {
        "" => None,
        text => {
            let range: IpNet = text
                .parse()
                .map_err(|_| DockerError::Ipam(format!("--ip-range {text:?} is not a CIDR")))?;
            if !subnet.contains(&range) {
                return Err(DockerError::Ipam(format!(
                    "--ip-range {range} is not inside --subnet {subnet}"
                )));
            }
            Some(range)
        }
    };
    Ok(Pool { subnet, range })
}

impl Plugin {
    pub async fn ipam_request_pool(
        &self,
        request: RequestPoolRequest,
    ) -> Result<Value, DockerError> {
        let pool = request_pool(&request)?;
        Ok(json!({ "PoolID": pool.id(), "Pool": pool.subnet.to_string(), "Data": {} }))
    }

    /// Pools are not stored: nothing to release.
    pub async fn ipam_release_pool(
        &self,
        request: ReleasePoolRequest,
    ) -> Result<Value, DockerError> {
        Pool::parse(&request.pool_id)?;
        Ok(json!({}))
    }

    pub async fn ipam_request_address(
        &self,
        request: RequestAddressRequest,
    ) -> Result<Value, DockerError> {
        let pool = Pool::parse(&request.pool_id)?;
        let asked = match request.address.as_str() {
            "" => None,
            text => Some(parse_ip(text)?),
        };
        if let Some(ip) = asked.filter(|ip| !pool.subnet.contains(ip)) {
            return Err(DockerError::Ipam(format!(
                "{ip} is not in pool {}",
                pool.subnet
            )));
        }
        let gateway = request
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .map(String::as_str)
            == Some(GATEWAY_ADDRESS);
        let manager = self.manager().await?;
        let Some(network) = network_with(&manager, &pool.subnet)? else {
            // Before CreateNetwork: the gateway, or an address Docker names.
            let ip = match asked {
                Some(ip) => ip,
                None if gateway => pool.subnet.hosts().next().ok_or_else(|| {
                    DockerError::Ipam(format!("pool {} has no address", pool.subnet))
                })?,
                None => {
                    return Err(DockerError::Ipam(format!(
                        "no netvlan network has subnet {} yet",
                        pool.subnet
                    )))
                }
            };
            return Ok(answer(pool.prefixed(ip)));
        };
        if gateway {
            let config = network.ipam.config();
            let stored = config
                .subnets()
                .iter()
                .find(|s| s.subnet == pool.subnet)
                .and_then(|s| s.gateway);
            return match stored {
                Some(g) if asked.is_none_or(|ip| ip == g) => Ok(answer(pool.prefixed(g))),
                Some(g) => Err(DockerError::Ipam(format!(
                    "network {} has gateway {g} on {}: give --gateway {g}",
                    network.name, pool.subnet
                ))),
                None => Err(DockerError::Ipam(format!(
                    "network {} has no gateway on {}",
                    network.name, pool.subnet
                ))),
            };
        }
        let ask = match asked {
            Some(ip) => Request::Exact(ip),
            None => Request::Any(Family::of_net(&pool.subnet)),
        };
        let held = manager.hold_address(&network.name, ask, pool.range)?;
        Ok(answer(held.to_string()))
    }

    pub async fn ipam_release_address(
        &self,
        request: ReleaseAddressRequest,
    ) -> Result<Value, DockerError> {
        let pool = Pool::parse(&request.pool_id)?;
        let ip = parse_ip(&request.address)?;
        let manager = self.manager().await?;
        if let Some(network) = network_with(&manager, &pool.subnet)? {
            manager.release_held(&network.name, ip)?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(body: Value) -> Result<Pool, DockerError> {
        request_pool(&serde_json::from_value(body).unwrap())
    }

    #[test]
    fn a_pool_id_carries_the_subnet_and_the_range() {
        let p = pool(json!({"Pool": "10.1.0.0/24", "SubPool": "10.1.0.128/25"})).unwrap();
        assert_eq!(p.id(), "10.1.0.0/24@10.1.0.128/25");
        assert_eq!(Pool::parse(&p.id()).unwrap(), p);
        let v6 = pool(json!({"Pool": "fd00:1::/64", "V6": true})).unwrap();
        assert_eq!(Pool::parse(&v6.id()).unwrap(), v6);
        assert_eq!(v6.prefixed("fd00:1::5".parse().unwrap()), "fd00:1::5/64");
    }

    #[test]
    fn bad_pools_are_refused_naming_what_is_wrong() {
        let why = |body: Value| pool(body).unwrap_err().message();
        assert!(why(json!({})).contains("--subnet"));
        assert!(why(json!({"Pool": "10.1.0.0/33"})).contains("10.1.0.0/33"));
        assert!(why(json!({"Pool": "10.1.0.5/24"})).contains("10.1.0.0/24"));
        assert!(why(json!({"Pool": "10.1.0.0/24", "V6": true})).contains("family"));
        assert!(why(json!({"Pool": "10.1.0.0/24", "SubPool": "10.2.0.0/25"})).contains("inside"));
        assert!(Pool::parse("nonsense")
            .unwrap_err()
            .message()
            .contains("nonsense"));
    }
}
