# A pool of GitHub App tokens, issued by an OAuth2 client-credentials grant.
# Apply it with: tokend pool apply examples/github.hcl
#
# Every field has the name it has in the JSON form; durations are strings.

name = "github"

# The leader keeps two active tokens issued.
size = 2

provider {
  type          = "oauth2"
  token_url     = "http://127.0.0.1:9000/token"
  client_id     = "app"
  client_secret = "s3cret" # write-only: the API never shows it again
  scopes        = ["read"]
}

rotation {
  max_age      = "1h" # replace a token an hour after it was issued
  renew_before = "2s" # ... or this long before it stops being served
  grace        = "1s" # a replaced token stays valid this long
}

# The leader probes every token: 200 means healthy, 401 and 403 failed.
health_check {
  url           = "http://127.0.0.1:9000/check"
  interval      = "1s"
  timeout       = "500ms"
  expect_status = [200]
  header        = "Authorization"
  format        = "Bearer {{token}}"
}
