# Stand-in for python:3.11-slim-bookworm, step 2: no package index is reachable when the ratesvc
# image is built, so this image carries a wheelhouse of the project's build requirements and
# dependencies and a pip.conf that installs from it only: the project's Dockerfile stays as it is.
ARG BASE
FROM ${BASE}
ARG RECIPE
LABEL org.ratesvc.standin="python:3.11-slim-bookworm" org.ratesvc.standin.recipe="${RECIPE}"
COPY wheelhouse /wheelhouse
COPY pip.conf /etc/pip.conf
