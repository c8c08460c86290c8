package pipeline

import (
	"context"
	"fmt"
	"os"
)

// PrepareAgent hashes the rescue agent binary and uploads it to the tools container unless it is
// there already. The handler calls it in the background when it starts, so that the first
// incident after a deployment does not wait in OfflinePatch for the upload of a binary of tens
// of megabytes; a stage that needs the binary before it is done joins the upload under way. A
// failure is only reported: the stage uploads again when it needs the binary.
func (p *Pipeline) PrepareAgent(ctx context.Context) error {
	_, _, err := p.ensureAgentBlob(ctx)
	return err
}

// ensureAgentBlob makes sure the agent binary is in the tools container under its hash and
// returns it and its blob name. Concurrent callers (the start-up preparation, the stages of
// concurrent incidents) share one upload instead of each sending the whole binary.
func (p *Pipeline) ensureAgentBlob(ctx context.Context) (agentFile, string, error) {
	a, err := p.agentBinary()
	if err != nil {
		return agentFile{}, "", err
	}
	if err := p.ensureContainers(ctx); err != nil {
		return agentFile{}, "", err
	}
	name := AgentBlobName(a.sha256)
	if ok, err := p.agentBlobThere(ctx, a, name); err != nil || ok {
		return a, name, err
	}
	// The upload runs apart from the caller's context: callers that joined it must not see it
	// cancelled because the first one gave up. PutFile bounds it with agentUploadTimeout.
	up := context.WithoutCancel(ctx)
	ch := p.agentUpload.DoChan(name, func() (any, error) {
		if ok, err := p.agentBlobThere(up, a, name); err != nil || ok {
			return nil, err // uploaded by a call that ended just before this one began
		}
		f, err := os.Open(a.path)
		if err != nil {
			return nil, fmt.Errorf("agent binary: %w", err)
		}
		defer f.Close()
		if err := p.Blobs.PutFile(up, p.Config.ToolsContainer, name, f, a.size, agentUploadTimeout); err != nil {
			return nil, err
		}
		p.log().Info("agent binary uploaded", "blob", name, "bytes", a.size)
		return nil, nil
	})
	select {
	case r := <-ch:
		return a, name, r.Err
	case <-ctx.Done():
		return agentFile{}, "", fmt.Errorf("agent binary upload: %w", ctx.Err())
	}
}

// agentBlobThere reports whether the tools container holds the whole agent binary.
func (p *Pipeline) agentBlobThere(ctx context.Context, a agentFile, name string) (bool, error) {
	ok, size, err := p.Blobs.Exists(ctx, p.Config.ToolsContainer, name)
	return ok && size == a.size, err
}
