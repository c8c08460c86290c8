package azsim

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// route maps an ARM request (method and path) to the SDK API name its client would have set.
type route struct {
	method string
	re     *regexp.Regexp
	api    string
}

const (
	seg  = `[^/]+`
	subP = `^/subscriptions/` + seg
	rgP  = subP + `/resourceGroups/` + seg + `/providers/Microsoft\.Compute`
	vmP  = rgP + `/virtualMachines/` + seg
)

func r(method, pattern, api string) route {
	return route{method, regexp.MustCompile(`(?i)` + pattern + `$`), api}
}

// routes are the ARM operations the simulator serves over HTTP. The fake server transports
// dispatch on the API name the SDK puts in the request context, which does not cross the wire, so
// the handler finds it again from the path.
var routes = []route{
	r("GET", vmP, "VirtualMachinesClient.Get"),
	r("PUT", vmP, "VirtualMachinesClient.BeginCreateOrUpdate"),
	r("PATCH", vmP, "VirtualMachinesClient.BeginUpdate"),
	r("DELETE", vmP, "VirtualMachinesClient.BeginDelete"),
	r("GET", vmP+`/instanceView`, "VirtualMachinesClient.InstanceView"),
	r("POST", vmP+`/deallocate`, "VirtualMachinesClient.BeginDeallocate"),
	r("POST", vmP+`/start`, "VirtualMachinesClient.BeginStart"),
	r("POST", vmP+`/powerOff`, "VirtualMachinesClient.BeginPowerOff"),
	r("POST", vmP+`/restart`, "VirtualMachinesClient.BeginRestart"),
	r("POST", vmP+`/attachDetachDataDisks`, "VirtualMachinesClient.BeginAttachDetachDataDisks"),
	r("POST", vmP+`/retrieveBootDiagnosticsData`, "VirtualMachinesClient.RetrieveBootDiagnosticsData"),
	r("GET", rgP+`/virtualMachines`, "VirtualMachinesClient.NewListPager"),
	r("GET", subP+`/providers/Microsoft\.Compute/virtualMachines`, "VirtualMachinesClient.NewListAllPager"),
	r("PUT", vmP+`/runCommands/`+seg, "VirtualMachineRunCommandsClient.BeginCreateOrUpdate"),
	r("GET", vmP+`/runCommands/`+seg, "VirtualMachineRunCommandsClient.GetByVirtualMachine"),
	r("DELETE", vmP+`/runCommands/`+seg, "VirtualMachineRunCommandsClient.BeginDelete"),
	r("GET", vmP+`/runCommands`, "VirtualMachineRunCommandsClient.NewListByVirtualMachinePager"),
	r("GET", rgP+`/disks/`+seg, "DisksClient.Get"),
	r("PUT", rgP+`/disks/`+seg, "DisksClient.BeginCreateOrUpdate"),
	r("PATCH", rgP+`/disks/`+seg, "DisksClient.BeginUpdate"),
	r("DELETE", rgP+`/disks/`+seg, "DisksClient.BeginDelete"),
	r("GET", rgP+`/disks`, "DisksClient.NewListByResourceGroupPager"),
	r("GET", subP+`/providers/Microsoft\.Compute/disks`, "DisksClient.NewListPager"),
	r("GET", rgP+`/snapshots/`+seg, "SnapshotsClient.Get"),
	r("PUT", rgP+`/snapshots/`+seg, "SnapshotsClient.BeginCreateOrUpdate"),
	r("PATCH", rgP+`/snapshots/`+seg, "SnapshotsClient.BeginUpdate"),
	r("DELETE", rgP+`/snapshots/`+seg, "SnapshotsClient.BeginDelete"),
	r("GET", rgP+`/snapshots`, "SnapshotsClient.NewListByResourceGroupPager"),
	r("GET", subP+`/providers/Microsoft\.Compute/snapshots`, "SnapshotsClient.NewListPager"),
	r("GET", subP+`/providers/Microsoft\.Compute/skus`, "ResourceSKUsClient.NewListPager"),
	r("GET", `^/providers/Microsoft\.Support/services`, "ServicesClient.NewListPager"),
	r("GET", `^/providers/Microsoft\.Support/services/`+seg, "ServicesClient.Get"),
	r("GET", `^/providers/Microsoft\.Support/services/`+seg+`/problemClassifications`, "ProblemClassificationsClient.NewListPager"),
	r("GET", `^/providers/Microsoft\.Support/services/`+seg+`/problemClassifications/`+seg, "ProblemClassificationsClient.Get"),
	r("POST", subP+`/providers/Microsoft\.Support/checkNameAvailability`, "TicketsClient.CheckNameAvailability"),
	r("PUT", subP+`/providers/Microsoft\.Support/supportTickets/`+seg, "TicketsClient.BeginCreate"),
	r("GET", subP+`/providers/Microsoft\.Support/supportTickets/`+seg, "TicketsClient.Get"),
	r("PATCH", subP+`/providers/Microsoft\.Support/supportTickets/`+seg, "TicketsClient.Update"),
	r("GET", subP+`/providers/Microsoft\.Support/supportTickets`, "TicketsClient.NewListPager"),
}

func apiFor(method, escapedPath string) string {
	for _, rt := range routes {
		if rt.method == method && rt.re.MatchString(escapedPath) {
			return rt.api
		}
	}
	return ""
}

// bootDiagPrefix is where Handler serves boot diagnostics blobs.
const bootDiagPrefix = "/azsim/bootdiag/"

// Handler serves the simulator over HTTP: ARM requests from real SDK clients (built with
// EndpointClientOptions) go through the same transport as in-process clients, and
// /azsim/bootdiag/... serves the boot diagnostics blobs that RetrieveBootDiagnosticsData points at.
func (s *Sim) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Sim) serveHTTP(w http.ResponseWriter, req *http.Request) {
	if rest, ok := strings.CutPrefix(req.URL.Path, bootDiagPrefix); ok {
		s.serveBootDiag(w, req, rest)
		return
	}
	ctx := req.Context()
	if !operationPathRE.MatchString(req.URL.Path) {
		api := apiFor(req.Method, req.URL.EscapedPath())
		if api == "" {
			writeResponse(w, newARMError(http.StatusNotFound, "InvalidResourceType",
				"azsim has no route for %s %s.", req.Method, req.URL.Path).response(req))
			return
		}
		ctx = context.WithValue(ctx, runtime.CtxAPINameKey{}, api)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		writeResponse(w, newARMError(http.StatusBadRequest, CodeInvalidRequestContent, "reading the body: %v", err).response(req))
		return
	}
	out := req.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", req.Host
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	resp, err := s.tr.Do(out)
	if err != nil {
		if ctx.Err() != nil {
			return // the client went away
		}
		writeResponse(w, newARMError(http.StatusInternalServerError, CodeInternalServerError, "%v", err).response(req))
		return
	}
	writeResponse(w, resp)
}

func writeResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (s *Sim) serveBootDiag(w http.ResponseWriter, req *http.Request, rest string) {
	vmUUID, file, ok := strings.Cut(rest, "/")
	if !ok || req.Method != http.MethodGet || (file != bootDiagScreenshot && file != bootDiagSerialLog) {
		http.NotFound(w, req)
		return
	}
	q := req.URL.Query()
	data, status := s.state.bootDiagBlob(vmUUID, file, q.Get("se"), q.Get("sig"))
	if status != http.StatusOK {
		w.Header().Set("x-ms-error-code", CodeAuthenticationFailed)
		http.Error(w, http.StatusText(status), status)
		return
	}
	ct := "text/plain; charset=utf-8"
	if file == bootDiagScreenshot {
		ct = "image/bmp"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("x-ms-blob-type", "BlockBlob")
	_, _ = w.Write(data)
}
