# Sourced by the image's build steps that run pip: trust the CA bundle build secret if one
# was given, else the base image's own CA store (which may hold a proxy's CA), and use a
# package mirror only if PIP_INDEX_URL was given.
for ca in /run/secrets/ca-bundle /etc/ssl/certs/ca-certificates.crt; do
  if [ -f "$ca" ]; then export PIP_CERT="$ca"; break; fi
done
if [ -z "${PIP_INDEX_URL:-}" ]; then unset PIP_INDEX_URL; fi
