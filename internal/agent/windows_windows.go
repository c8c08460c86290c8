//go:build windows

package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf16"

	"golang.org/x/sys/windows"
)

// Bounds on the programs the agent runs.
const (
	toolTimeout       = 2 * time.Minute // reg.exe, bcdedit.exe
	powershellTimeout = 5 * time.Minute // storage cmdlets can wait on the disk stack
)

// systemWindows is the Windows the agent runs on.
type systemWindows struct {
	system32 string
}

var _ Windows = (*systemWindows)(nil)

// SystemWindows returns the Windows of the machine the agent runs on.
func SystemWindows() (Windows, error) {
	root := os.Getenv("SystemRoot")
	if root == "" {
		return nil, errors.New("SystemRoot is not set")
	}
	return &systemWindows{system32: filepath.Join(root, "System32")}, nil
}

// run starts a program with each argument as its own argv element (no shell in between) and
// returns its standard output.
func (w *systemWindows) run(ctx context.Context, timeout time.Duration, exe string, args []string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	ce := &CommandError{Program: filepath.Base(exe), Args: args, ExitCode: -1, Stderr: stderr.String(), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.ExitCode, ce.Err = ee.ExitCode(), nil
	}
	if ce.Stderr == "" {
		ce.Stderr = stdout.String() // bcdedit reports some errors on stdout
	}
	if ctx.Err() != nil {
		ce.Err = ctx.Err()
	}
	return "", ce
}

func (w *systemWindows) Reg(ctx context.Context, args ...string) (string, error) {
	return w.run(ctx, toolTimeout, filepath.Join(w.system32, "reg.exe"), args, nil)
}

func (w *systemWindows) Bcdedit(ctx context.Context, args ...string) (string, error) {
	return w.run(ctx, toolTimeout, filepath.Join(w.system32, "bcdedit.exe"), args, nil)
}

// PowerShell scripts. They are constants: the values they act on come in environment variables
// (VMRESCUE_*) and are converted to typed values inside the script, never pasted into it.
const (
	psListDisks = `$ErrorActionPreference = 'Stop'
$wmi = @{}
Get-CimInstance -ClassName Win32_DiskDrive | ForEach-Object { $wmi[[int]$_.Index] = $_ }
$out = foreach ($d in Get-Disk) {
  $w = $wmi[[int]$d.Number]
  $parts = @(Get-Partition -DiskNumber $d.Number -ErrorAction SilentlyContinue | ForEach-Object {
    $letter = ''
    if ($_.DriveLetter -and [int][char]$_.DriveLetter -ne 0) { $letter = [string]$_.DriveLetter }
    [pscustomobject]@{ PartitionNumber = [int]$_.PartitionNumber; DriveLetter = $letter; Offset = [int64]$_.Offset;
      Size = [int64]$_.Size; MbrType = $_.MbrType; GptType = [string]$_.GptType; Guid = [string]$_.Guid;
      IsActive = [bool]$_.IsActive; IsBoot = [bool]$_.IsBoot; IsSystem = [bool]$_.IsSystem; IsHidden = [bool]$_.IsHidden }
  })
  $lun = $null; $port = $null; $target = $null
  if ($w) { $lun = [int]$w.SCSILogicalUnit; $port = [int]$w.SCSIPort; $target = [int]$w.SCSITargetId }
  [pscustomobject]@{ Number = [int]$d.Number; Lun = $lun; ScsiPort = $port; ScsiTarget = $target;
    BusType = [string]$d.BusType; Size = [int64]$d.Size; PartitionStyle = [string]$d.PartitionStyle;
    Signature = $d.Signature; Guid = [string]$d.Guid; IsOffline = [bool]$d.IsOffline;
    OfflineReason = [string]$d.OfflineReason; IsReadOnly = [bool]$d.IsReadOnly; IsBoot = [bool]$d.IsBoot;
    IsSystem = [bool]$d.IsSystem; FriendlyName = [string]$d.FriendlyName; Location = [string]$d.Location;
    Partitions = $parts }
}
ConvertTo-Json -InputObject @($out) -Depth 4 -Compress`

	psSetDisk = `$ErrorActionPreference = 'Stop'
$n = [int]$env:VMRESCUE_DISK
$v = $env:VMRESCUE_VALUE
switch ($env:VMRESCUE_OP) {
  'offline'   { Set-Disk -Number $n -IsOffline ([bool]::Parse($v)) }
  'readonly'  { Set-Disk -Number $n -IsReadOnly ([bool]::Parse($v)) }
  'signature' { Set-Disk -Number $n -Signature ([uint32]::Parse($v)) }
  'guid'      { Set-Disk -Number $n -Guid ([string]$v) }
  'addpath'   { Add-PartitionAccessPath -DiskNumber $n -PartitionNumber ([int]$env:VMRESCUE_PARTITION) -AccessPath ([string]$v) }
  'rmpath'    { Remove-PartitionAccessPath -DiskNumber $n -PartitionNumber ([int]$env:VMRESCUE_PARTITION) -AccessPath ([string]$v) }
  default     { throw 'unknown operation' }
}
Update-HostStorageCache`
)

func (w *systemWindows) powershell(ctx context.Context, script string, env []string) (string, error) {
	exe := filepath.Join(w.system32, "WindowsPowerShell", "v1.0", "powershell.exe")
	return w.run(ctx, powershellTimeout, exe,
		[]string{"-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encodePS(script)}, env)
}

// encodePS encodes a script for -EncodedCommand: base64 of UTF-16LE.
func encodePS(script string) string {
	u := utf16.Encode([]rune(script))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c), byte(c>>8)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func (w *systemWindows) setDisk(ctx context.Context, disk int, op, value string, partition int) error {
	env := []string{"VMRESCUE_DISK=" + strconv.Itoa(disk), "VMRESCUE_OP=" + op, "VMRESCUE_VALUE=" + value,
		"VMRESCUE_PARTITION=" + strconv.Itoa(partition)}
	_, err := w.powershell(ctx, psSetDisk, env)
	return err
}

func (w *systemWindows) ListDisks(ctx context.Context) ([]byte, error) {
	out, err := w.powershell(ctx, psListDisks, nil)
	return []byte(out), err
}

func (w *systemWindows) SetDiskOffline(ctx context.Context, disk int, offline bool) error {
	return w.setDisk(ctx, disk, "offline", strconv.FormatBool(offline), 0)
}

func (w *systemWindows) SetDiskReadOnly(ctx context.Context, disk int, readOnly bool) error {
	return w.setDisk(ctx, disk, "readonly", strconv.FormatBool(readOnly), 0)
}

func (w *systemWindows) SetDiskSignature(ctx context.Context, disk int, signature uint32) error {
	return w.setDisk(ctx, disk, "signature", strconv.FormatUint(uint64(signature), 10), 0)
}

func (w *systemWindows) SetDiskGUID(ctx context.Context, disk int, guid string) error {
	return w.setDisk(ctx, disk, "guid", guid, 0)
}

func (w *systemWindows) AddAccessPath(ctx context.Context, disk, partition int, letter string) error {
	return w.setDisk(ctx, disk, "addpath", Letter(letter), partition)
}

func (w *systemWindows) RemoveAccessPath(ctx context.Context, disk, partition int, letter string) error {
	return w.setDisk(ctx, disk, "rmpath", Letter(letter)+`\`, partition)
}

func (w *systemWindows) UsedLetters(ctx context.Context) ([]string, error) {
	mask, err := windows.GetLogicalDrives()
	if err != nil {
		return nil, fmt.Errorf("GetLogicalDrives: %w", err)
	}
	var out []string
	for i := range 26 {
		if mask&(1<<i) != 0 {
			out = append(out, string(rune('A'+i))+":")
		}
	}
	return out, nil
}

func (w *systemWindows) FreeSpace(ctx context.Context, letter string) (int64, int64, error) {
	root, err := windows.UTF16PtrFromString(Letter(letter) + `\`)
	if err != nil {
		return 0, 0, err
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(root, &avail, &total, &free); err != nil {
		return 0, 0, fmt.Errorf("GetDiskFreeSpaceEx %s: %w", letter, err)
	}
	return int64(avail), int64(total), nil
}

func (w *systemWindows) Stat(path string) (FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Name: fi.Name(), Size: fi.Size(), Dir: fi.IsDir(), Modified: fi.ModTime()}, nil
}

func (w *systemWindows) ReadDir(path string) ([]FileInfo, error) {
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	out := make([]FileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue // gone since the listing
		}
		out = append(out, FileInfo{Name: fi.Name(), Size: fi.Size(), Dir: fi.IsDir(), Modified: fi.ModTime()})
	}
	return out, nil
}

func (w *systemWindows) Open(path string) (File, error) { return os.Open(path) }

func (w *systemWindows) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (w *systemWindows) WriteFile(path string, data []byte) error {
	return w.replace(path, func(f *os.File) error { _, err := f.Write(data); return err })
}

func (w *systemWindows) MkdirAll(path string) error { return os.MkdirAll(path, 0o755) }

func (w *systemWindows) Remove(path string) error {
	if p, err := windows.UTF16PtrFromString(path); err == nil {
		_ = windows.SetFileAttributes(p, windows.FILE_ATTRIBUTE_NORMAL) // hidden or system files refuse deletion
	}
	return os.Remove(path)
}

func (w *systemWindows) CopyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return w.replace(dst, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}

// replace writes a file next to path and moves it over path, so that path is never half
// written. Hidden, system and read-only attributes (the BCD store has them) would make the move
// fail; they are cleared for the move and put back.
func (w *systemWindows) replace(path string, write func(*os.File) error) error {
	tmp := path + ".vmrescue-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	dstp, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return err
	}
	tmpp, err := windows.UTF16PtrFromString(tmp)
	if err != nil {
		return err
	}
	attrs, attrErr := windows.GetFileAttributes(dstp)
	if attrErr == nil {
		_ = windows.SetFileAttributes(dstp, windows.FILE_ATTRIBUTE_NORMAL)
	}
	if err := windows.MoveFileEx(tmpp, dstp, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH); err != nil {
		if attrErr == nil {
			_ = windows.SetFileAttributes(dstp, attrs)
		}
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if attrErr == nil {
		_ = windows.SetFileAttributes(dstp, attrs)
	}
	return nil
}
