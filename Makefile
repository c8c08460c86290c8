# vmrescue — run `make help` for the targets.

GO        ?= go
AZURITE_VERSION := 3.37.0
TOOLS     := $(CURDIR)/.tools
AZURITE   := $(TOOLS)/azurite/node_modules/.bin/azurite-blob
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(TOOLS)/bin/staticcheck
DIST      := $(CURDIR)/dist
LDFLAGS   := -s -w
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the handler for linux/amd64 (CGO off, trimmed) into bin/handler.
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o bin/handler ./handler

.PHONY: build-agent
build-agent: ## Build the rescue agent (the same binary) for windows/amd64 into bin/handler.exe.
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o bin/handler.exe ./handler

.PHONY: tools
tools: $(AZURITE) ## Install Azurite (npm, pinned) into .tools/ if missing.

$(AZURITE):
	mkdir -p $(TOOLS)/azurite
	cd $(TOOLS)/azurite && npm install --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

$(STATICCHECK):
	GOBIN=$(TOOLS)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: test
test: tools ## Run every test with -race; starts Azurite for the run and stops it after.
	./scripts/with-azurite.sh $(GO) test -race -count=1 -timeout 30m ./...

.PHONY: lint
lint: $(STATICCHECK) ## gofmt, go vet (linux and windows) and staticcheck.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=windows $(GO) build ./...
	$(STATICCHECK) ./...

.PHONY: package
package: build build-agent ## Assemble dist/app (host.json, functions, handler, agent) and dist/vmrescue.zip.
	rm -rf $(DIST)/app && mkdir -p $(DIST)/app
	cp host.json $(DIST)/app/
	cp -r functions/* $(DIST)/app/
	install -m 0755 bin/handler $(DIST)/app/handler
	cp bin/handler.exe $(DIST)/app/handler-agent.exe
	rm -f $(DIST)/vmrescue.zip
	cd $(DIST)/app && zip -qr -X $(DIST)/vmrescue.zip .
	@echo "packaged $(DIST)/vmrescue.zip"

.PHONY: local
local: tools ## Run the local Functions host and Azure simulator (handler local).
	$(GO) run ./handler local

.PHONY: demo
demo: tools ## Run the whole pipeline locally on the default fleet and print a report.
	$(GO) run ./handler demo

SCENARIOS ?= all

.PHONY: bench
bench: tools ## Run the load and fault scenarios (SCENARIOS=storm,chaos,...) and write docs/benchmarks.{md,json}.
	$(GO) run ./handler bench $(SCENARIOS)

PARAMS ?= infra/main.parameters.local.json

.PHONY: deploy
deploy: package ## Deploy to Azure with the az CLI (PARAMS=infra/main.parameters.local.json).
	./infra/deploy.sh -p $(PARAMS)

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin dist
