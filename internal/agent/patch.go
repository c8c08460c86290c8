package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// patch turns on crash dumps in every control set and the serial console and EMS in the BCD
// store, after backing both up; it reads everything back, and on any failure puts the backups
// back.
func (a *Agent) patch(ctx context.Context, s *session, req Request, res *Result) error {
	st, err := a.inspectState(ctx, s, req, res)
	if err != nil {
		return err
	}
	if req.UnlessDump && res.HasMemoryDump() {
		a.log().Info("memory dump found: the disk is left as it is", "dump", res.Dumps.MemoryDump.Path)
		return nil
	}
	mem, margin := memoryBytes(req)
	plan := PlanDump(SpaceInput{MemoryBytes: mem, MarginBytes: margin, OSFreeBytes: st.osFree, Data: req.DataVolumes, Override: req.DumpType})
	p := &PatchResult{
		DumpType: plan.Type, CrashDumpEnabled: plan.CrashDumpEnabled, DumpFile: plan.DumpFile,
		DumpVolume: plan.DumpVolume, Reason: plan.Reason, Overridden: plan.Overridden,
		ControlSets: st.hive.sets, BackupDir: backupDir(s),
	}
	res.Patch = p

	b, kept, err := a.ensureBackup(ctx, s, req.IncidentID)
	if err != nil {
		return fmt.Errorf("back up the BCD store and the SYSTEM hive: %w", err)
	}
	if kept {
		res.warn("kept the backup an earlier patch made at %s", b.Created.Format(time.RFC3339))
	}

	key, err := a.newHiveKey()
	if err != nil {
		return err
	}
	p.HiveKey = key
	loaded := false
	fail := func(cause error) error {
		if rbErr := a.rollback(ctx, s, key, loaded, b); rbErr != nil {
			p.RollbackError = rbErr.Error()
			return fmt.Errorf("%w; rollback failed: %v", cause, rbErr)
		}
		p.RolledBack = true
		return fmt.Errorf("%w (rolled back from the backups)", cause)
	}

	// The registry.
	if err := a.loadHive(ctx, key, s.hive); err != nil {
		return fail(err)
	}
	loaded = true
	for _, w := range planCrashControl(st.hive.cc, st.hive.sets, plan) {
		if w.ok {
			continue
		}
		k := JoinPath(key, w.set, crashControlKey)
		if _, err := a.Win.Reg(ctx, "add", k, "/v", w.name, "/t", w.typ, "/d", w.data, "/f"); err != nil {
			return fail(fmt.Errorf("set %s %s: %w", w.set, w.name, err))
		}
		p.RegistryChanges++
	}
	after, err := a.readHiveView(ctx, key)
	if err != nil {
		return fail(fmt.Errorf("read back the SYSTEM hive: %w", err))
	}
	for _, set := range st.hive.sets {
		if !crashControlMatches(after.cc[set], plan) {
			return fail(fmt.Errorf("read back: %s CrashControl does not hold what was written", set))
		}
	}
	attempts, err := a.unloadHive(ctx, key)
	p.UnloadAttempts = attempts
	if err != nil {
		return fail(err)
	}
	loaded = false
	res.CrashControl = crashControlResult(after)

	// The BCD store.
	for _, c := range planBCD(st.bcd, st.loader) {
		if c.ok {
			continue
		}
		if _, err := a.Win.Bcdedit(ctx, append([]string{"/store", s.bcdStore}, c.args...)...); err != nil {
			return fail(fmt.Errorf("bcdedit %s: %w", c.what, err))
		}
		p.BCDChanges++
	}
	entries, err := a.readBCD(ctx, s.bcdStore)
	if err != nil {
		return fail(fmt.Errorf("read back: %w", err))
	}
	loader, _ := FindBCDEntry(entries, st.loader.ID)
	for _, c := range planBCD(entries, loader) {
		if !c.ok {
			return fail(fmt.Errorf("read back: BCD %s is not set", c.what))
		}
	}
	res.Boot = bootResult(entries, loader, res.Boot.LoaderChoice)
	p.Verified = true
	return nil
}

// rollback unloads the hive if it is loaded and puts every backed-up file back.
func (a *Agent) rollback(ctx context.Context, s *session, key string, loaded bool, b *backupManifest) error {
	ctx = context.WithoutCancel(ctx)
	if loaded {
		if _, err := a.unloadHive(ctx, key); err != nil {
			return err
		}
	}
	_, err := a.restoreBackup(ctx, s, b)
	return err
}

// The backup kept on the Windows volume of the attached disk. It travels with the disk, so
// restore finds it in a later run, and it is made once: a second patch (a redelivered message)
// keeps the first, pristine backup.
const (
	backupDirName      = `vmrescue\backup`
	backupManifestName = "backup.json"
	backupVersion      = 1
	volOS, volBoot     = "os", "boot"
)

type backupManifest struct {
	Version    int          `json:"version"`
	IncidentID string       `json:"incidentId,omitempty"`
	Created    time.Time    `json:"created"`
	Files      []backupFile `json:"files"`
}

type backupFile struct {
	Volume  string `json:"volume"` // os (the Windows partition) or boot (the BCD's partition)
	Path    string `json:"path"`   // from the volume's root
	Backup  string `json:"backup"` // name in the backup directory
	Present bool   `json:"present"`
	Size    int64  `json:"size,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

func backupDir(s *session) string { return JoinPath(s.winVol, backupDirName) }

// backedUpFiles are the files patch may change: the hive and the store, each a registry hive,
// with their transaction logs (restoring a hive without its logs would let Windows replay
// newer logs onto an older hive).
func backedUpFiles(s *session) []backupFile {
	store := s.bcdStore[len(s.bootVol):]
	var out []backupFile
	for _, suffix := range []string{"", ".LOG1", ".LOG2"} {
		out = append(out, backupFile{Volume: volOS, Path: systemHivePath + suffix, Backup: "SYSTEM" + suffix})
	}
	for _, suffix := range []string{"", ".LOG", ".LOG1", ".LOG2"} {
		out = append(out, backupFile{Volume: volBoot, Path: store + suffix, Backup: "BCD" + suffix})
	}
	return out
}

func (s *session) volumePath(vol, p string) string {
	if vol == volBoot {
		return JoinPath(s.bootVol, p)
	}
	return JoinPath(s.winVol, p)
}

func (a *Agent) fileSHA256(path string) (string, int64, error) {
	f, err := a.Win.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func (a *Agent) readBackupManifest(s *session) (*backupManifest, error) {
	raw, err := a.Win.ReadFile(JoinPath(backupDir(s), backupManifestName))
	if err != nil {
		return nil, err
	}
	var m backupManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("backup manifest: %w", err)
	}
	if m.Version != backupVersion {
		return nil, fmt.Errorf("backup manifest version %d not supported", m.Version)
	}
	return &m, nil
}

// checkBackup verifies that every backed-up file is there with its recorded hash.
func (a *Agent) checkBackup(s *session, m *backupManifest) error {
	for _, f := range m.Files {
		if !f.Present {
			continue
		}
		sum, _, err := a.fileSHA256(JoinPath(backupDir(s), f.Backup))
		if err != nil {
			return fmt.Errorf("backup of %s: %w", f.Path, err)
		}
		if sum != f.SHA256 {
			return fmt.Errorf("backup of %s is damaged (SHA-256 %s, recorded %s)", f.Path, sum, f.SHA256)
		}
	}
	return nil
}

// ensureBackup returns the backup, making it unless a sound one exists. kept reports an
// existing one. The manifest is written last, so a backup without one is incomplete and redone.
func (a *Agent) ensureBackup(ctx context.Context, s *session, incidentID string) (m *backupManifest, kept bool, err error) {
	if m, err := a.readBackupManifest(s); err == nil {
		if err := a.checkBackup(s, m); err != nil {
			return nil, false, fmt.Errorf("an earlier backup exists but %w; refusing to overwrite it", err)
		}
		return m, true, nil
	} else if !IsNotFound(err) {
		return nil, false, err
	}
	dir := backupDir(s)
	if err := a.Win.MkdirAll(dir); err != nil {
		return nil, false, err
	}
	m = &backupManifest{Version: backupVersion, IncidentID: incidentID, Created: a.now().UTC()}
	for _, f := range backedUpFiles(s) {
		src := s.volumePath(f.Volume, f.Path)
		if _, err := a.Win.Stat(src); err != nil {
			if !IsNotFound(err) {
				return nil, false, err
			}
			m.Files = append(m.Files, f) // absent: restore removes any that appears
			continue
		}
		f.Present = true
		dst := JoinPath(dir, f.Backup)
		if err := a.Win.CopyFile(ctx, src, dst); err != nil {
			return nil, false, fmt.Errorf("copy %s: %w", src, err)
		}
		want, _, err := a.fileSHA256(src)
		if err != nil {
			return nil, false, err
		}
		got, n, err := a.fileSHA256(dst)
		if err != nil {
			return nil, false, err
		}
		if got != want {
			return nil, false, fmt.Errorf("the copy of %s differs from the original", src)
		}
		f.SHA256, f.Size = got, n
		m.Files = append(m.Files, f)
	}
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := a.Win.WriteFile(JoinPath(dir, backupManifestName), raw); err != nil {
		return nil, false, err
	}
	return m, false, nil
}

// restoreBackup puts every backed-up file back, removes files that did not exist at backup time,
// and checks each restored file's hash.
func (a *Agent) restoreBackup(ctx context.Context, s *session, m *backupManifest) ([]string, error) {
	if err := a.checkBackup(s, m); err != nil {
		return nil, err
	}
	var restored []string
	var errs []error
	for _, f := range m.Files {
		dst := s.volumePath(f.Volume, f.Path)
		if !f.Present {
			if err := a.Win.Remove(dst); err != nil && !IsNotFound(err) {
				errs = append(errs, fmt.Errorf("remove %s: %w", dst, err))
			}
			continue
		}
		if err := a.Win.CopyFile(ctx, JoinPath(backupDir(s), f.Backup), dst); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", dst, err))
			continue
		}
		sum, _, err := a.fileSHA256(dst)
		switch {
		case err != nil:
			errs = append(errs, err)
		case sum != f.SHA256:
			errs = append(errs, fmt.Errorf("restored %s does not match its backup", dst))
		default:
			restored = append(restored, dst)
		}
	}
	return restored, errors.Join(errs...)
}

// restore undoes an earlier patch from the backup it made.
func (a *Agent) restore(ctx context.Context, s *session, res *Result) error {
	if err := a.cleanStaleHives(ctx, res); err != nil {
		return err
	}
	res.Restore = &RestoreResult{BackupDir: backupDir(s)}
	m, err := a.readBackupManifest(s)
	if err != nil {
		if IsNotFound(err) {
			return refuse("no backup at %s: this disk was not patched by vmrescue", backupDir(s))
		}
		return err
	}
	restored, err := a.restoreBackup(ctx, s, m)
	res.Restore.Restored = restored
	if err != nil {
		return err
	}
	res.Restore.Verified = true
	return nil
}
