package azsim

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	supportfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport/fake"
)

// reqInfo travels in the request context from the transport to the fake server functions and
// back: a server function that starts a long-running operation leaves it here, so that the
// transport can answer the polls from the operation's progress.
type reqInfo struct {
	op *operation
}

type reqInfoKey struct{}

func setOp(ctx context.Context, op *operation) {
	if info, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		info.op = op
	}
}

func respond[T any](v T, err *armError) (r azfake.Responder[T], e azfake.ErrorResponder) {
	if err != nil {
		e.SetError(err)
		return r, e
	}
	r.SetResponse(http.StatusOK, v, nil)
	return r, e
}

// lro answers a long-running operation: one "InProgress" response with status (202, 201 or 200,
// whichever the method accepts), then the terminal result. An operation that needs no work (op
// nil) answers with the result at once.
func lro[T any](ctx context.Context, op *operation, status int, v T, err *armError) (p azfake.PollerResponder[T], e azfake.ErrorResponder) {
	if err != nil {
		e.SetError(err)
		return p, e
	}
	if op != nil {
		p.AddNonTerminalResponse(status, nil)
		setOp(ctx, op)
	}
	p.SetTerminalResponse(http.StatusOK, v, nil)
	return p, e
}

func page[T any](v T, err *armError) (p azfake.PagerResponder[T]) {
	if err != nil {
		p.AddError(err)
		return p
	}
	p.AddPage(http.StatusOK, v, nil)
	return p
}

// computeServers wires the armcompute fake servers to the state.
func (st *State) computeServers() *computefake.ServerFactory {
	const (
		vms  = "VirtualMachines."
		dks  = "Disks."
		sns  = "Snapshots."
		rcmd = "VirtualMachineRunCommands."
	)
	return &computefake.ServerFactory{
		VirtualMachinesServer: computefake.VirtualMachinesServer{
			Get: func(_ context.Context, rg, name string, o *armcompute.VirtualMachinesClientGetOptions) (azfake.Responder[armcompute.VirtualMachinesClientGetResponse], azfake.ErrorResponder) {
				expand := o != nil && o.Expand != nil && strings.EqualFold(string(*o.Expand), string(armcompute.InstanceViewTypesInstanceView))
				vm, err := st.getVM(rg, name, expand)
				return respond(armcompute.VirtualMachinesClientGetResponse{VirtualMachine: vm}, err)
			},
			InstanceView: func(_ context.Context, rg, name string, _ *armcompute.VirtualMachinesClientInstanceViewOptions) (azfake.Responder[armcompute.VirtualMachinesClientInstanceViewResponse], azfake.ErrorResponder) {
				iv, err := st.vmInstanceView(rg, name)
				return respond(armcompute.VirtualMachinesClientInstanceViewResponse{VirtualMachineInstanceView: iv}, err)
			},
			NewListPager: func(rg string, _ *armcompute.VirtualMachinesClientListOptions) azfake.PagerResponder[armcompute.VirtualMachinesClientListResponse] {
				v, err := st.listVMs(rg)
				return page(armcompute.VirtualMachinesClientListResponse{VirtualMachineListResult: armcompute.VirtualMachineListResult{Value: v}}, err)
			},
			NewListAllPager: func(_ *armcompute.VirtualMachinesClientListAllOptions) azfake.PagerResponder[armcompute.VirtualMachinesClientListAllResponse] {
				v, err := st.listVMs("")
				return page(armcompute.VirtualMachinesClientListAllResponse{VirtualMachineListResult: armcompute.VirtualMachineListResult{Value: v}}, err)
			},
			BeginDeallocate: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginDeallocateOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientDeallocateResponse], azfake.ErrorResponder) {
				op, err := st.power(vms+"BeginDeallocate", rg, name, transDeallocate)
				return lro(ctx, op, http.StatusAccepted, armcompute.VirtualMachinesClientDeallocateResponse{}, err)
			},
			BeginPowerOff: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginPowerOffOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientPowerOffResponse], azfake.ErrorResponder) {
				op, err := st.power(vms+"BeginPowerOff", rg, name, transPowerOff)
				return lro(ctx, op, http.StatusAccepted, armcompute.VirtualMachinesClientPowerOffResponse{}, err)
			},
			BeginStart: func(ctx context.Context, rg, name string, _ *armcompute.VirtualMachinesClientBeginStartOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientStartResponse], azfake.ErrorResponder) {
				op, err := st.power(vms+"BeginStart", rg, name, transStart)
				return lro(ctx, op, http.StatusAccepted, armcompute.VirtualMachinesClientStartResponse{}, err)
			},
			BeginCreateOrUpdate: func(ctx context.Context, rg, name string, vm armcompute.VirtualMachine, _ *armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientCreateOrUpdateResponse], azfake.ErrorResponder) {
				ch := vmChange{tags: vm.Tags, setTags: true, zones: vm.Zones, setZones: true}
				if p := vm.Properties; p != nil {
					if p.StorageProfile != nil {
						ch.osDisk, ch.dataDisks, ch.putData = p.StorageProfile.OSDisk, p.StorageProfile.DataDisks, true
					}
					if p.HardwareProfile != nil && p.HardwareProfile.VMSize != nil {
						ch.size = string(*p.HardwareProfile.VMSize)
					}
				}
				res, op, err := st.updateVM(vms+"BeginCreateOrUpdate", rg, name, ch)
				return lro(ctx, op, http.StatusOK, armcompute.VirtualMachinesClientCreateOrUpdateResponse{VirtualMachine: res}, err)
			},
			BeginUpdate: func(ctx context.Context, rg, name string, vm armcompute.VirtualMachineUpdate, _ *armcompute.VirtualMachinesClientBeginUpdateOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientUpdateResponse], azfake.ErrorResponder) {
				ch := vmChange{tags: vm.Tags, setTags: vm.Tags != nil, zones: vm.Zones, setZones: vm.Zones != nil}
				if p := vm.Properties; p != nil {
					if p.StorageProfile != nil {
						ch.osDisk = p.StorageProfile.OSDisk
						if p.StorageProfile.DataDisks != nil {
							ch.dataDisks, ch.putData = p.StorageProfile.DataDisks, true
						}
					}
					if p.HardwareProfile != nil && p.HardwareProfile.VMSize != nil {
						ch.size = string(*p.HardwareProfile.VMSize)
					}
				}
				res, op, err := st.updateVM(vms+"BeginUpdate", rg, name, ch)
				return lro(ctx, op, http.StatusOK, armcompute.VirtualMachinesClientUpdateResponse{VirtualMachine: res}, err)
			},
			BeginAttachDetachDataDisks: func(ctx context.Context, rg, name string, req armcompute.AttachDetachDataDisksRequest, _ *armcompute.VirtualMachinesClientBeginAttachDetachDataDisksOptions) (azfake.PollerResponder[armcompute.VirtualMachinesClientAttachDetachDataDisksResponse], azfake.ErrorResponder) {
				sp, op, err := st.attachDetach(vms+"BeginAttachDetachDataDisks", rg, name, req)
				return lro(ctx, op, http.StatusAccepted, armcompute.VirtualMachinesClientAttachDetachDataDisksResponse{StorageProfile: sp}, err)
			},
			RetrieveBootDiagnosticsData: func(ctx context.Context, rg, name string, o *armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataOptions) (azfake.Responder[armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataResponse], azfake.ErrorResponder) {
				var minutes *int32
				if o != nil {
					minutes = o.SasURIExpirationTimeInMinutes
				}
				res, err := st.bootDiagnosticsURIs(st.publicURL, rg, name, minutes)
				return respond(armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataResponse{RetrieveBootDiagnosticsDataResult: res}, err)
			},
		},
		DisksServer: computefake.DisksServer{
			Get: func(_ context.Context, rg, name string, _ *armcompute.DisksClientGetOptions) (azfake.Responder[armcompute.DisksClientGetResponse], azfake.ErrorResponder) {
				d, err := st.getDisk(rg, name)
				return respond(armcompute.DisksClientGetResponse{Disk: d}, err)
			},
			BeginCreateOrUpdate: func(ctx context.Context, rg, name string, disk armcompute.Disk, _ *armcompute.DisksClientBeginCreateOrUpdateOptions) (azfake.PollerResponder[armcompute.DisksClientCreateOrUpdateResponse], azfake.ErrorResponder) {
				d, op, err := st.putDisk(dks+"BeginCreateOrUpdate", rg, name, disk)
				return lro(ctx, op, http.StatusAccepted, armcompute.DisksClientCreateOrUpdateResponse{Disk: d}, err)
			},
			BeginDelete: func(ctx context.Context, rg, name string, _ *armcompute.DisksClientBeginDeleteOptions) (azfake.PollerResponder[armcompute.DisksClientDeleteResponse], azfake.ErrorResponder) {
				op, err := st.deleteDisk(dks+"BeginDelete", rg, name)
				return lro(ctx, op, http.StatusAccepted, armcompute.DisksClientDeleteResponse{}, err)
			},
			NewListPager: func(_ *armcompute.DisksClientListOptions) azfake.PagerResponder[armcompute.DisksClientListResponse] {
				v, err := st.listDisks("")
				return page(armcompute.DisksClientListResponse{DiskList: armcompute.DiskList{Value: v}}, err)
			},
			NewListByResourceGroupPager: func(rg string, _ *armcompute.DisksClientListByResourceGroupOptions) azfake.PagerResponder[armcompute.DisksClientListByResourceGroupResponse] {
				v, err := st.listDisks(rg)
				return page(armcompute.DisksClientListByResourceGroupResponse{DiskList: armcompute.DiskList{Value: v}}, err)
			},
		},
		SnapshotsServer: computefake.SnapshotsServer{
			Get: func(_ context.Context, rg, name string, _ *armcompute.SnapshotsClientGetOptions) (azfake.Responder[armcompute.SnapshotsClientGetResponse], azfake.ErrorResponder) {
				s, err := st.getSnapshot(rg, name)
				return respond(armcompute.SnapshotsClientGetResponse{Snapshot: s}, err)
			},
			BeginCreateOrUpdate: func(ctx context.Context, rg, name string, snap armcompute.Snapshot, _ *armcompute.SnapshotsClientBeginCreateOrUpdateOptions) (azfake.PollerResponder[armcompute.SnapshotsClientCreateOrUpdateResponse], azfake.ErrorResponder) {
				s, op, err := st.putSnapshot(sns+"BeginCreateOrUpdate", rg, name, snap)
				return lro(ctx, op, http.StatusAccepted, armcompute.SnapshotsClientCreateOrUpdateResponse{Snapshot: s}, err)
			},
			BeginDelete: func(ctx context.Context, rg, name string, _ *armcompute.SnapshotsClientBeginDeleteOptions) (azfake.PollerResponder[armcompute.SnapshotsClientDeleteResponse], azfake.ErrorResponder) {
				op, err := st.deleteSnapshot(sns+"BeginDelete", rg, name)
				return lro(ctx, op, http.StatusAccepted, armcompute.SnapshotsClientDeleteResponse{}, err)
			},
			NewListPager: func(_ *armcompute.SnapshotsClientListOptions) azfake.PagerResponder[armcompute.SnapshotsClientListResponse] {
				v, err := st.listSnapshots("")
				return page(armcompute.SnapshotsClientListResponse{SnapshotList: armcompute.SnapshotList{Value: v}}, err)
			},
			NewListByResourceGroupPager: func(rg string, _ *armcompute.SnapshotsClientListByResourceGroupOptions) azfake.PagerResponder[armcompute.SnapshotsClientListByResourceGroupResponse] {
				v, err := st.listSnapshots(rg)
				return page(armcompute.SnapshotsClientListByResourceGroupResponse{SnapshotList: armcompute.SnapshotList{Value: v}}, err)
			},
		},
		ResourceSKUsServer: computefake.ResourceSKUsServer{
			NewListPager: func(o *armcompute.ResourceSKUsClientListOptions) azfake.PagerResponder[armcompute.ResourceSKUsClientListResponse] {
				var filter string
				if o != nil && o.Filter != nil {
					filter = *o.Filter
				}
				return page(armcompute.ResourceSKUsClientListResponse{ResourceSKUsResult: armcompute.ResourceSKUsResult{Value: resourceSKUs(st.location, filter)}}, nil)
			},
		},
		VirtualMachineRunCommandsServer: computefake.VirtualMachineRunCommandsServer{
			BeginCreateOrUpdate: func(ctx context.Context, rg, vm, name string, rc armcompute.VirtualMachineRunCommand, _ *armcompute.VirtualMachineRunCommandsClientBeginCreateOrUpdateOptions) (azfake.PollerResponder[armcompute.VirtualMachineRunCommandsClientCreateOrUpdateResponse], azfake.ErrorResponder) {
				res, op, err := st.putRunCommand(rcmd+"BeginCreateOrUpdate", rg, vm, name, rc)
				return lro(ctx, op, http.StatusCreated, armcompute.VirtualMachineRunCommandsClientCreateOrUpdateResponse{VirtualMachineRunCommand: res}, err)
			},
			GetByVirtualMachine: func(_ context.Context, rg, vm, name string, o *armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions) (azfake.Responder[armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineResponse], azfake.ErrorResponder) {
				expand := o != nil && o.Expand != nil && strings.EqualFold(*o.Expand, "instanceView")
				res, err := st.getRunCommand(rg, vm, name, expand)
				return respond(armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineResponse{VirtualMachineRunCommand: res}, err)
			},
			NewListByVirtualMachinePager: func(rg, vm string, o *armcompute.VirtualMachineRunCommandsClientListByVirtualMachineOptions) azfake.PagerResponder[armcompute.VirtualMachineRunCommandsClientListByVirtualMachineResponse] {
				expand := o != nil && o.Expand != nil && strings.EqualFold(*o.Expand, "instanceView")
				v, err := st.listRunCommands(rg, vm, expand)
				return page(armcompute.VirtualMachineRunCommandsClientListByVirtualMachineResponse{
					VirtualMachineRunCommandsListResult: armcompute.VirtualMachineRunCommandsListResult{Value: v}}, err)
			},
			BeginDelete: func(ctx context.Context, rg, vm, name string, _ *armcompute.VirtualMachineRunCommandsClientBeginDeleteOptions) (azfake.PollerResponder[armcompute.VirtualMachineRunCommandsClientDeleteResponse], azfake.ErrorResponder) {
				op, err := st.deleteRunCommand(rcmd+"BeginDelete", rg, vm, name)
				return lro(ctx, op, http.StatusAccepted, armcompute.VirtualMachineRunCommandsClientDeleteResponse{}, err)
			},
		},
	}
}

var locationFilterRE = regexp.MustCompile(`(?i)location\s+eq\s+'([^']*)'`)

// resourceSKUs lists the VM sizes of Sizes (and two disk SKUs) in the simulator's region, every
// zone, filtered by a $filter of the form "location eq 'westeurope'".
func resourceSKUs(location, filter string) []*armcompute.ResourceSKU {
	if m := locationFilterRE.FindStringSubmatch(filter); m != nil && !strings.EqualFold(m[1], location) {
		return []*armcompute.ResourceSKU{}
	}
	locInfo := []*armcompute.ResourceSKULocationInfo{{Location: to.Ptr(location),
		Zones: []*string{to.Ptr("1"), to.Ptr("2"), to.Ptr("3")}}}
	capability := func(name, value string) *armcompute.ResourceSKUCapabilities {
		return &armcompute.ResourceSKUCapabilities{Name: to.Ptr(name), Value: to.Ptr(value)}
	}
	var out []*armcompute.ResourceSKU
	for _, s := range Sizes {
		out = append(out, &armcompute.ResourceSKU{
			ResourceType: to.Ptr("virtualMachines"), Name: to.Ptr(s.Name), Tier: to.Ptr("Standard"),
			Size: to.Ptr(strings.TrimPrefix(s.Name, "Standard_")), Family: to.Ptr(s.Family),
			Locations: []*string{to.Ptr(location)}, LocationInfo: locInfo,
			Capabilities: []*armcompute.ResourceSKUCapabilities{
				capability("vCPUs", strconv.Itoa(s.VCPUs)),
				capability("MemoryGB", strconv.FormatFloat(s.MemoryGB, 'f', -1, 64)),
				capability("MaxDataDiskCount", strconv.Itoa(s.MaxDataDiskCount)),
				capability("HyperVGenerations", strings.Join(s.HyperVGenerations, ",")),
				capability("PremiumIO", "True"),
				capability("vCPUsAvailable", strconv.Itoa(s.VCPUs)),
			},
			Restrictions: []*armcompute.ResourceSKURestrictions{},
		})
	}
	for _, d := range []string{"Premium_LRS", "Standard_LRS"} {
		out = append(out, &armcompute.ResourceSKU{
			ResourceType: to.Ptr("disks"), Name: to.Ptr(d), Tier: to.Ptr(strings.Split(d, "_")[0]),
			Locations: []*string{to.Ptr(location)}, LocationInfo: locInfo,
			Capabilities: []*armcompute.ResourceSKUCapabilities{capability("MaxSizeGiB", "32767")},
			Restrictions: []*armcompute.ResourceSKURestrictions{},
		})
	}
	return out
}

// supportServers wires the armsupport fake servers to the state.
func (st *State) supportServers() *supportfake.ServerFactory {
	return &supportfake.ServerFactory{
		ServicesServer: supportfake.ServicesServer{
			NewListPager: func(_ *armsupport.ServicesClientListOptions) azfake.PagerResponder[armsupport.ServicesClientListResponse] {
				var v []*armsupport.Service
				for _, s := range SupportCatalog {
					v = append(v, serviceARM(s))
				}
				return page(armsupport.ServicesClientListResponse{ServicesListResult: armsupport.ServicesListResult{Value: v}}, nil)
			},
			Get: func(_ context.Context, name string, _ *armsupport.ServicesClientGetOptions) (azfake.Responder[armsupport.ServicesClientGetResponse], azfake.ErrorResponder) {
				s, ok := lookupService(name)
				if !ok {
					return respond(armsupport.ServicesClientGetResponse{}, serviceNotFound(name))
				}
				return respond(armsupport.ServicesClientGetResponse{Service: *serviceARM(s)}, nil)
			},
		},
		ProblemClassificationsServer: supportfake.ProblemClassificationsServer{
			NewListPager: func(svcName string, _ *armsupport.ProblemClassificationsClientListOptions) azfake.PagerResponder[armsupport.ProblemClassificationsClientListResponse] {
				s, ok := lookupService(svcName)
				if !ok {
					return page(armsupport.ProblemClassificationsClientListResponse{}, serviceNotFound(svcName))
				}
				var v []*armsupport.ProblemClassification
				for _, c := range s.Classifications {
					v = append(v, classificationARM(s, c))
				}
				return page(armsupport.ProblemClassificationsClientListResponse{
					ProblemClassificationsListResult: armsupport.ProblemClassificationsListResult{Value: v}}, nil)
			},
			Get: func(_ context.Context, svcName, name string, _ *armsupport.ProblemClassificationsClientGetOptions) (azfake.Responder[armsupport.ProblemClassificationsClientGetResponse], azfake.ErrorResponder) {
				s, ok := lookupService(svcName)
				if !ok {
					return respond(armsupport.ProblemClassificationsClientGetResponse{}, serviceNotFound(svcName))
				}
				for _, c := range s.Classifications {
					if strings.EqualFold(c.Name, name) {
						return respond(armsupport.ProblemClassificationsClientGetResponse{ProblemClassification: *classificationARM(s, c)}, nil)
					}
				}
				return respond(armsupport.ProblemClassificationsClientGetResponse{},
					newARMError(http.StatusNotFound, CodeResourceNotFound, "Problem classification '%s' was not found.", name))
			},
		},
		TicketsServer: supportfake.TicketsServer{
			CheckNameAvailability: func(_ context.Context, in armsupport.CheckNameAvailabilityInput, _ *armsupport.TicketsClientCheckNameAvailabilityOptions) (azfake.Responder[armsupport.TicketsClientCheckNameAvailabilityResponse], azfake.ErrorResponder) {
				out, err := st.checkTicketName(in)
				return respond(armsupport.TicketsClientCheckNameAvailabilityResponse{CheckNameAvailabilityOutput: out}, err)
			},
			BeginCreate: func(ctx context.Context, name string, in armsupport.TicketDetails, _ *armsupport.TicketsClientBeginCreateOptions) (azfake.PollerResponder[armsupport.TicketsClientCreateResponse], azfake.ErrorResponder) {
				t, op, err := st.createTicket("Tickets.BeginCreate", name, in)
				return lro(ctx, op, http.StatusAccepted, armsupport.TicketsClientCreateResponse{TicketDetails: t}, err)
			},
			Get: func(_ context.Context, name string, _ *armsupport.TicketsClientGetOptions) (azfake.Responder[armsupport.TicketsClientGetResponse], azfake.ErrorResponder) {
				t, err := st.getTicket(name)
				return respond(armsupport.TicketsClientGetResponse{TicketDetails: t}, err)
			},
			NewListPager: func(_ *armsupport.TicketsClientListOptions) azfake.PagerResponder[armsupport.TicketsClientListResponse] {
				return page(armsupport.TicketsClientListResponse{TicketsListResult: armsupport.TicketsListResult{Value: st.listTickets()}}, nil)
			},
		},
	}
}
