# The gateways' OpenBao policy: the Transit key "strongroom" and nothing else
# (docs/keys.md). Strongroom creates the key on first use if it is missing.
path "transit/keys/strongroom"              { capabilities = ["create", "read", "update"] }
path "transit/keys/strongroom/rotate"       { capabilities = ["update"] }
path "transit/keys/strongroom/config"       { capabilities = ["update"] }
path "transit/datakey/plaintext/strongroom" { capabilities = ["update"] }
path "transit/decrypt/strongroom"           { capabilities = ["update"] }
path "transit/rewrap/strongroom"            { capabilities = ["update"] }
