# tokend in an image with nothing but the static binary. No registry is
# reachable where tokend is built, so nothing is pulled: `make docker` builds
# the binary on the host (CGO_ENABLED=0) and this file only copies it in.
FROM scratch
COPY bin/docker/tokend /tokend
# Agents keep their Raft data, keys saved by rotations and the unix socket
# here; docker-compose.yml mounts a named volume.
VOLUME ["/data"]
EXPOSE 8550 8551 8552 8552/udp
ENTRYPOINT ["/tokend"]
CMD ["agent", "--dev", "--http-addr", "0.0.0.0:8550"]
