package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/dumpfile"
)

// Registry hive handling.
const (
	// hiveKeyPrefix starts the name of every key the agent loads a hive under, so that a key
	// left by a run that died can be recognized and unloaded.
	hiveKeyPrefix = "VMRESCUE_"
	// unloadAttempts and unloadFirstWait bound the reg unload retries: it fails while any
	// handle into the hive is open (a scanner, the indexer), which passes in seconds.
	unloadAttempts  = 6
	unloadFirstWait = time.Second
	unloadMaxWait   = 8 * time.Second
)

// hiveView is what the agent reads from the SYSTEM hive.
type hiveView struct {
	current, reason string
	sets            []string
	cc              map[string]CrashControl
}

func (a *Agent) newHiveKey() (string, error) {
	var b [4]byte
	if _, err := io.ReadFull(a.rand(), b[:]); err != nil {
		return "", err
	}
	return `HKLM\` + hiveKeyPrefix + strings.ToUpper(hex.EncodeToString(b[:])), nil
}

func (a *Agent) regQuery(ctx context.Context, key string) (RegKey, error) {
	out, err := a.Win.Reg(ctx, "query", key)
	if err != nil {
		return RegKey{}, err
	}
	return ParseRegQuery(out)
}

// cleanStaleHives unloads hives that an earlier agent run loaded and did not unload; their
// files stay locked until then.
func (a *Agent) cleanStaleHives(ctx context.Context, res *Result) error {
	hklm, err := a.regQuery(ctx, "HKLM")
	if err != nil {
		return fmt.Errorf("list HKLM: %w", err)
	}
	for _, k := range hklm.Subkeys {
		if strings.HasPrefix(strings.ToUpper(k), hiveKeyPrefix) {
			res.warn(`unloading HKLM\%s left loaded by an earlier run`, k)
			if _, err := a.unloadHive(ctx, `HKLM\`+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *Agent) loadHive(ctx context.Context, key, file string) error {
	if _, err := a.Win.Reg(ctx, "load", key, file); err != nil {
		return fmt.Errorf("load %s: %w", file, err)
	}
	return nil
}

// unloadHive runs reg unload until it succeeds, waiting longer after each failure.
func (a *Agent) unloadHive(ctx context.Context, key string) (attempts int, err error) {
	wait := unloadFirstWait
	for attempts = 1; ; attempts++ {
		_, err = a.Win.Reg(ctx, "unload", key)
		if err == nil {
			return attempts, nil
		}
		if attempts == unloadAttempts {
			return attempts, fmt.Errorf("unload %s after %d attempts: %w", key, attempts, err)
		}
		a.log().Warn("reg unload failed; retrying", "key", key, "attempt", attempts, "err", err)
		if err := a.sleep(ctx, wait); err != nil {
			return attempts, fmt.Errorf("unload %s: %w", key, err)
		}
		wait = min(2*wait, unloadMaxWait)
	}
}

// readHiveView reads the control sets and their CrashControl values from a loaded hive.
func (a *Agent) readHiveView(ctx context.Context, key string) (hiveView, error) {
	root, err := a.regQuery(ctx, key)
	if err != nil {
		return hiveView{}, fmt.Errorf("read the SYSTEM hive: %w", err)
	}
	sel, err := a.regQuery(ctx, key+`\Select`)
	if err != nil && !IsNotFound(err) {
		return hiveView{}, fmt.Errorf(`read Select: %w`, err)
	}
	v := hiveView{cc: map[string]CrashControl{}}
	v.current, v.sets, v.reason, err = ChooseControlSets(sel, root.Subkeys)
	if err != nil {
		return hiveView{}, err
	}
	for _, set := range v.sets {
		k, err := a.regQuery(ctx, JoinPath(key, set, crashControlKey))
		if err != nil && !IsNotFound(err) {
			return hiveView{}, fmt.Errorf("read %s CrashControl: %w", set, err)
		}
		v.cc[set] = crashControlFrom(set, k)
	}
	return v, nil
}

// readHive loads the SYSTEM hive, reads it and unloads it.
func (a *Agent) readHive(ctx context.Context, s *session, res *Result) (hiveView, error) {
	if err := a.cleanStaleHives(ctx, res); err != nil {
		return hiveView{}, err
	}
	key, err := a.newHiveKey()
	if err != nil {
		return hiveView{}, err
	}
	if err := a.loadHive(ctx, key, s.hive); err != nil {
		return hiveView{}, err
	}
	v, readErr := a.readHiveView(ctx, key)
	_, unloadErr := a.unloadHive(ctx, key)
	return v, errors.Join(readErr, unloadErr)
}

func crashControlResult(v hiveView) *CrashControlResult {
	r := &CrashControlResult{Current: v.current, Selection: v.reason, SetCount: len(v.sets)}
	for _, set := range v.sets {
		r.Sets = append(r.Sets, v.cc[set])
	}
	return r
}

// dumpSource is a dump file found on the disk, ready to upload.
type dumpSource struct {
	path string // on the rescue VM
	name string // blob name under the incident prefix
	// original is the file's path on the VM's own disk (path without the rescue VM's drive
	// letter), for the manifest.
	original string
	file     DumpFile
}

// findDumps looks for the memory dump where the current control set's DumpFile says (and at the
// default place) and lists the minidumps, newest first, reading each header.
func (a *Agent) findDumps(s *session, v hiveView, res *Result) (*DumpsResult, []dumpSource) {
	cur := v.cc[v.current]
	dumpPaths := []string{}
	if cur.DumpFile != "" {
		if p, ok := expandSystemRoot(cur.DumpFile, s.winVol); ok {
			dumpPaths = append(dumpPaths, p)
		} else {
			res.warn("DumpFile %s is on a volume of the VM that is not attached here", cur.DumpFile)
		}
	}
	def, _ := expandSystemRoot(DefaultDumpFile, s.winVol)
	if len(dumpPaths) == 0 || !strings.EqualFold(dumpPaths[0], def) {
		dumpPaths = append(dumpPaths, def)
	}
	out := &DumpsResult{}
	var srcs []dumpSource
	for _, p := range dumpPaths {
		fi, err := a.Win.Stat(p)
		if err != nil || fi.Dir {
			continue
		}
		f := a.describeDump(p, fi)
		out.MemoryDump = &f
		srcs = append(srcs, dumpSource{path: p, name: "MEMORY.DMP", file: f})
		break
	}

	dir := DefaultMinidumpDir
	if cur.MinidumpDir != "" {
		dir = cur.MinidumpDir
	}
	mdir, ok := expandSystemRoot(dir, s.winVol)
	if !ok {
		res.warn("MinidumpDir %s is on a volume of the VM that is not attached here", dir)
		return out, srcs
	}
	entries, err := a.Win.ReadDir(mdir)
	if err != nil {
		if !IsNotFound(err) {
			res.warn("list %s: %v", mdir, err)
		}
		return out, srcs
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if !entries[i].Modified.Equal(entries[j].Modified) {
			return entries[i].Modified.After(entries[j].Modified)
		}
		return entries[i].Name > entries[j].Name
	})
	for _, e := range entries {
		if e.Dir || !strings.EqualFold(pathExt(e.Name), ".dmp") {
			continue
		}
		p := JoinPath(mdir, e.Name)
		f := a.describeDump(p, e)
		out.Minidumps = append(out.Minidumps, f)
		srcs = append(srcs, dumpSource{path: p, name: "Minidump/" + e.Name, file: f})
	}
	out.MinidumpCount = len(out.Minidumps)
	return out, srcs
}

func pathExt(name string) string {
	if i := strings.LastIndex(name, "."); i >= 0 {
		return name[i:]
	}
	return ""
}

func (a *Agent) describeDump(path string, fi FileInfo) DumpFile {
	d := DumpFile{Path: path, Size: fi.Size, Modified: fi.Modified.UTC()}
	f, err := a.Win.Open(path)
	if err != nil {
		d.HeaderError = err.Error()
		return d
	}
	defer f.Close()
	h, err := dumpfile.Parse(f, fi.Size)
	if err != nil {
		d.HeaderError = err.Error()
		return d
	}
	bc := h.BugCheck()
	d.BugCheck, d.DumpType = &bc, h.Kind()
	return d
}

// readBCD enumerates the BCD store.
func (a *Agent) readBCD(ctx context.Context, store string) ([]BCDEntry, error) {
	out, err := a.Win.Bcdedit(ctx, "/store", store, "/enum", "all", "/v")
	if err != nil {
		return nil, fmt.Errorf("read the BCD store: %w", err)
	}
	return ParseBCDEnum(out)
}

func memoryBytes(req Request) (memory, margin int64) {
	m := req.MarginGB
	if m == 0 {
		m = DefaultMarginGB
	}
	return int64(req.MemoryGB * (1 << 30)), int64(m * (1 << 30))
}

// readSpace measures each volume of the attached disk and adds the declared data volumes.
func (a *Agent) readSpace(ctx context.Context, s *session, req Request) (*SpaceResult, int64, error) {
	mem, margin := memoryBytes(req)
	var vols []VolumeSpace
	var osFree int64
	seen := map[int]bool{}
	for _, p := range append(append([]PartitionInfo(nil), s.volumes...), s.boot) {
		if seen[p.PartitionNumber] {
			continue
		}
		seen[p.PartitionNumber] = true
		l := p.Letter()
		if q, ok := s.partition(p.PartitionNumber); ok && q.Letter() != "" {
			l = q.Letter()
		}
		if l == "" {
			continue
		}
		free, total, err := a.Win.FreeSpace(ctx, l)
		if err != nil {
			return nil, 0, fmt.Errorf("free space of %s: %w", l, err)
		}
		role := RoleOther
		switch p.PartitionNumber {
		case s.win.PartitionNumber:
			role, osFree = RoleOS, free
		case s.boot.PartitionNumber:
			role = RoleBoot
		}
		vols = append(vols, VolumeSpace{Volume: l, Role: role, FreeBytes: free, SizeBytes: total})
	}
	for _, d := range req.DataVolumes {
		vols = append(vols, VolumeSpace{Volume: Letter(d.Volume), Role: RoleData, FreeBytes: d.FreeBytes})
	}
	return &SpaceResult{MemoryBytes: mem, MarginBytes: margin, Volumes: volumeSpaces(mem, margin, vols)}, osFree, nil
}

// state is everything inspect reads; patch starts from it.
type state struct {
	hive   hiveView
	bcd    []BCDEntry
	loader BCDEntry
	srcs   []dumpSource
	osFree int64
}

// inspect reports the dumps, the CrashControl values, the boot settings and the free space.
// It reads as much as it can and returns the first error.
func (a *Agent) inspect(ctx context.Context, s *session, req Request, res *Result) error {
	_, err := a.inspectState(ctx, s, req, res)
	return err
}

func (a *Agent) inspectState(ctx context.Context, s *session, req Request, res *Result) (*state, error) {
	st := &state{}
	var errs []error
	v, err := a.readHive(ctx, s, res)
	if err != nil {
		errs = append(errs, err)
		v = hiveView{cc: map[string]CrashControl{}}
	} else {
		st.hive = v
		res.CrashControl = crashControlResult(v)
	}
	res.Dumps, st.srcs = a.findDumps(s, v, res)

	if entries, err := a.readBCD(ctx, s.bcdStore); err != nil {
		errs = append(errs, err)
	} else {
		st.bcd = entries
		loader, choice, err := ChooseLoader(entries)
		if err != nil {
			errs = append(errs, err)
			choice = "refused: " + err.Error()
		}
		st.loader = loader
		res.Boot = bootResult(entries, loader, choice)
	}

	space, osFree, err := a.readSpace(ctx, s, req)
	if err != nil {
		errs = append(errs, err)
	} else {
		res.Space, st.osFree = space, osFree
	}
	if len(errs) > 0 {
		return st, firstRefusalOr(errs)
	}
	return st, nil
}

// firstRefusalOr returns the first error, preferring a refusal (which is what the pipeline
// acts on) and keeping the others in the message.
func firstRefusalOr(errs []error) error {
	for i, e := range errs {
		var re *RefusedError
		if errors.As(e, &re) {
			errs[0], errs[i] = errs[i], errs[0]
			break
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs)-1)
	for i, e := range errs[1:] {
		msgs[i] = e.Error()
	}
	rest := strings.Join(msgs, "; ")
	var re *RefusedError
	if errors.As(errs[0], &re) {
		return &RefusedError{Reason: errs[0].Error() + "; " + rest}
	}
	return fmt.Errorf("%w; %s", errs[0], rest)
}
