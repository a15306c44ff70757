# OpenBao for the Transit key that wraps Strongroom's data keys. TLS only:
# gateways reach it as vault+https://openbao:8200 and check its certificate
# against STRONGROOM_VAULT_CA_FILE.
ui            = false
disable_mlock = false
api_addr      = "https://openbao:8200"
cluster_addr  = "https://openbao:8201"

storage "raft" {
  path    = "/openbao/data"
  node_id = "openbao-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/server.pem"
  tls_key_file    = "/openbao/tls/server-key.pem"
  tls_min_version = "tls12"
}
