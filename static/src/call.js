// The call: one RTCPeerConnection at a time, MDN "perfect negotiation" over signal frames.
//
// Every signal we send carries `pc`, the id of the RTCPeerConnection it belongs to (the server
// relays extra keys unchanged). An offer with a pc id we have not seen means the other side
// built a fresh connection (it reloaded, or it restarted the call): we drop ours and answer
// with a fresh one. Signals of an older connection are ignored.
//
// Who offers, so that exactly one negotiation happens:
//  - the side that starts the call (a click, or a reloaded page that was in a call) offers;
//  - the other side joins when an offer arrives (auto-join without a click);
//  - when the other member comes back while we are in a call and our connection is not
//    connected, we give them a moment to offer first (a reloaded page does), then offer.
//  - if both offer at once, perfect negotiation resolves the glare (polite = mentee).
//  - a signal can be lost (it went to a socket that was closing): a connection that is not
//    connected after a while is replaced by a fresh offer (impolite side first).
import { newId } from "./protocol.js";

const REJOIN_WAIT_MS = 2500;
const FAILED_RETRY_MS = 1500;
const STUCK_MS = { impolite: 6000, polite: 9000 };

export class Call extends EventTarget {
  constructor({ client, storage, localVideo, remoteVideo }) {
    super();
    this.client = client;
    this.storage = storage;
    this.localVideo = localVideo;
    this.remoteVideo = remoteVideo;
    this.active = false; // the user is in the call (persists across reloads)
    this.polite = false;
    this.iceServers = [];
    this.peerOnline = false;
    this.localStream = null; // camera + microphone (may be null if refused)
    this.screenTrack = null;
    this.micOn = true;
    this.cameraOn = true;
    this.peer = null; // {pc, id, remoteId, makingOffer, ignoreOffer, settingAnswer, videoSender}
    this.chain = Promise.resolve();
    this.rejoinTimer = null;
    this.failedTimer = null;
    this.stuckTimer = null;
    this.lastSignalAt = 0; // when we last acted on a signal of the other side
    this.remoteMuted = false;
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Run call operations one after the other (signals, start, hang up). */
  _serial(fn) {
    this.chain = this.chain.then(fn).catch((err) => console.warn("call:", err));
    return this.chain;
  }

  get status() {
    if (!this.active) return "idle";
    if (!this.peerOnline) return "waiting";
    if (this.peer && this.peer.pc.connectionState === "connected") return "connected";
    return "connecting";
  }

  _changed() {
    this._emit("change", { status: this.status });
  }

  _persist() {
    if (this.storage) this.storage.save({ inCall: this.active });
  }

  wasInCall() {
    const saved = this.storage ? this.storage.load() : null;
    return Boolean(saved && saved.inCall);
  }

  configure({ iceServers, polite }) {
    this.iceServers = Array.isArray(iceServers) ? iceServers : [];
    this.polite = polite;
  }

  // ---- media ----------------------------------------------------------------------------

  async _ensureMedia() {
    if (this.localStream) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this._emit("media-error", {
        message:
          "This browser cannot use a camera here (it needs https or localhost). " +
          "You can still chat and write notes, and see the other member.",
      });
      return;
    }
    try {
      this.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch (err) {
      let stream = null;
      try {
        // No camera, or the camera is busy: the microphone alone still makes a call.
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch {
        /* neither */
      }
      this.localStream = stream;
      this._emit("media-error", { message: mediaErrorText(err, Boolean(stream)) });
    }
    if (this.localStream) {
      this.localVideo.srcObject = this.localStream;
      this.localVideo.play().catch(() => {});
      const audio = this.localStream.getAudioTracks()[0];
      const video = this.localStream.getVideoTracks()[0];
      if (audio) audio.enabled = this.micOn;
      if (video) video.enabled = this.cameraOn;
    }
    this._emit("media");
  }

  _stopMedia() {
    if (this.localStream) for (const t of this.localStream.getTracks()) t.stop();
    if (this.screenTrack) this.screenTrack.stop();
    this.localStream = null;
    this.screenTrack = null;
    this.localVideo.srcObject = null;
    this._emit("media");
  }

  get hasAudio() {
    return Boolean(this.localStream && this.localStream.getAudioTracks().length);
  }

  get hasVideo() {
    return Boolean(this.localStream && this.localStream.getVideoTracks().length);
  }

  get sharing() {
    return Boolean(this.screenTrack);
  }

  // ---- the peer connection -------------------------------------------------------------

  _newPeer(remoteId = null) {
    this._closePeer();
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const peer = {
      pc,
      id: newId(),
      remoteId,
      makingOffer: false,
      ignoreOffer: false,
      settingAnswer: false,
      videoSender: null,
      remoteStream: new MediaStream(),
    };
    this.peer = peer;
    const outbound = new MediaStream();
    const audio = this.localStream && this.localStream.getAudioTracks()[0];
    const camera = this.localStream && this.localStream.getVideoTracks()[0];
    const video = this.screenTrack || camera;
    if (audio) {
      outbound.addTrack(audio);
      pc.addTrack(audio, outbound);
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    if (video) {
      outbound.addTrack(video);
      peer.videoSender = pc.addTrack(video, outbound);
    } else {
      peer.videoSender = pc.addTransceiver("video", { direction: "recvonly" }).sender;
    }
    pc.onnegotiationneeded = async () => {
      if (this.peer !== peer) return;
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        if (this.peer !== peer) return;
        this._signal(peer, { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
      } catch (err) {
        console.warn("call: offer failed", err);
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (this.peer !== peer) return;
      this._signal(peer, { type: "candidate", candidate: candidate ? candidate.toJSON() : null });
    };
    pc.ontrack = ({ track, streams }) => {
      if (this.peer !== peer) return;
      const stream = streams && streams[0] ? streams[0] : peer.remoteStream;
      if (stream === peer.remoteStream) peer.remoteStream.addTrack(track);
      if (this.remoteVideo.srcObject !== stream) {
        this.remoteVideo.srcObject = stream;
        this._playRemote();
      }
      this._changed();
    };
    pc.onconnectionstatechange = () => {
      if (this.peer !== peer) return;
      const state = pc.connectionState;
      if (state === "failed") this._onFailed();
      this._changed();
    };
    this._armStuck(peer);
    this._changed();
    return peer;
  }

  /** Replace a connection that does not get connected (a lost offer or answer). */
  _armStuck(peer) {
    if (this.stuckTimer) clearTimeout(this.stuckTimer);
    const wait = this.polite ? STUCK_MS.polite : STUCK_MS.impolite;
    this.stuckTimer = setTimeout(() => {
      this.stuckTimer = null;
      if (this.peer !== peer || !this.active) return;
      if (peer.pc.connectionState === "connected" || !this.peerOnline) return;
      if (Date.now() - this.lastSignalAt < 3000) {
        this._armStuck(peer); // still negotiating
        return;
      }
      this._renegotiate();
    }, wait);
  }

  _closePeer() {
    const peer = this.peer;
    this.peer = null;
    if (peer) {
      peer.pc.onnegotiationneeded = peer.pc.onicecandidate = null;
      peer.pc.ontrack = peer.pc.onconnectionstatechange = null;
      peer.pc.close();
    }
    this.remoteVideo.srcObject = null;
  }

  _playRemote() {
    const video = this.remoteVideo;
    video.muted = false;
    video.play().catch(() => {
      // Autoplay with sound was refused (no click on this page yet): play muted, offer unmute.
      video.muted = true;
      this.remoteMuted = true;
      video.play().catch(() => {});
      this._emit("remote-muted");
    });
  }

  unmuteRemote() {
    this.remoteVideo.muted = false;
    this.remoteMuted = false;
    this.remoteVideo.play().catch(() => {});
  }

  _signal(peer, data) {
    this.client.send({ t: "signal", data: { ...data, pc: peer.id } });
  }

  _clearTimers() {
    if (this.rejoinTimer) clearTimeout(this.rejoinTimer);
    if (this.failedTimer) clearTimeout(this.failedTimer);
    if (this.stuckTimer) clearTimeout(this.stuckTimer);
    this.rejoinTimer = this.failedTimer = this.stuckTimer = null;
  }

  /** Drop our connection and offer with a fresh one (the other side auto-joins or resets). */
  _renegotiate() {
    return this._serial(async () => {
      if (!this.active || !this.peerOnline) return;
      this._newPeer(); // negotiationneeded sends the offer
    });
  }

  _onFailed() {
    if (!this.active || !this.peerOnline || this.failedTimer) return;
    // The impolite side offers at once, the polite side a bit later if nothing came.
    const wait = this.polite ? FAILED_RETRY_MS * 2 : FAILED_RETRY_MS;
    const peer = this.peer;
    this.failedTimer = setTimeout(() => {
      this.failedTimer = null;
      if (this.peer === peer && (!peer || peer.pc.connectionState !== "connected")) {
        this._renegotiate();
      }
    }, wait);
  }

  // ---- user actions --------------------------------------------------------------------

  /** Start the call (click), or bring it back after a reload. */
  start() {
    return this._serial(async () => {
      if (this.active) return;
      this.active = true;
      this._persist();
      this._changed();
      await this._ensureMedia();
      if (!this.active) return; // hung up meanwhile
      if (this.peerOnline) this._newPeer(); // negotiationneeded sends the offer
      this._changed();
    });
  }

  hangUp() {
    return this._serial(async () => {
      if (!this.active) return;
      if (this.peerOnline) {
        this.client.send({ t: "signal", data: { type: "bye", pc: this.peer ? this.peer.id : "" } });
      }
      this._end();
    });
  }

  /** End locally (bye received, session ended). */
  _end() {
    this._clearTimers();
    this.active = false;
    this._persist();
    this._closePeer();
    this._stopMedia();
    this._changed();
  }

  endLocal() {
    return this._serial(async () => this._end());
  }

  toggleMic() {
    this.micOn = !this.micOn;
    const track = this.localStream && this.localStream.getAudioTracks()[0];
    if (track) track.enabled = this.micOn;
    this._emit("media");
  }

  toggleCamera() {
    this.cameraOn = !this.cameraOn;
    const track = this.localStream && this.localStream.getVideoTracks()[0];
    if (track) track.enabled = this.cameraOn;
    this._emit("media");
  }

  async toggleScreen() {
    if (this.screenTrack) {
      this._stopScreen();
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      this._emit("notice", { message: "This browser cannot share the screen." });
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (err) {
      const refused = err && (err.name === "NotAllowedError" || err.name === "AbortError");
      this._emit("notice", {
        message: refused
          ? "Screen sharing was cancelled. Your camera is still on."
          : "The screen could not be shared. Your camera is still on.",
      });
      return;
    }
    if (!this.active) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    const track = stream.getVideoTracks()[0];
    this.screenTrack = track;
    track.addEventListener("ended", () => {
      if (this.screenTrack === track) this._stopScreen();
    });
    await this._sendVideo(track);
    this.localVideo.srcObject = new MediaStream([track]);
    this._emit("media");
  }

  async _stopScreen() {
    const track = this.screenTrack;
    this.screenTrack = null;
    if (track) track.stop();
    const camera = this.localStream && this.localStream.getVideoTracks()[0];
    await this._sendVideo(camera || null);
    this.localVideo.srcObject = this.localStream;
    this._emit("media");
  }

  async _sendVideo(track) {
    const peer = this.peer;
    if (!peer || !peer.videoSender) return;
    try {
      await peer.videoSender.replaceTrack(track);
      const transceiver = peer.pc.getTransceivers().find((t) => t.sender === peer.videoSender);
      if (track && transceiver && transceiver.direction === "recvonly") {
        transceiver.direction = "sendrecv"; // no camera before: this renegotiates
      }
    } catch (err) {
      console.warn("call: replaceTrack failed", err);
    }
  }

  // ---- events from the room ------------------------------------------------------------

  /** A signal from the other member. */
  onSignal(data) {
    return this._serial(async () => {
      if (!data || typeof data.type !== "string") return;
      const from = typeof data.pc === "string" ? data.pc : null;
      if (data.type === "bye") {
        if (this.active) {
          this._end();
          this._emit("notice", { message: "The other member hung up." });
        }
        return;
      }
      if (data.type === "offer") {
        if (!this.active) {
          // The other member started the call: join it without a click.
          this.active = true;
          this._persist();
          this._changed();
          await this._ensureMedia();
          if (!this.active) return;
          this._newPeer(from);
        } else if (!this.peer || (from && this.peer.remoteId && from !== this.peer.remoteId)) {
          this._newPeer(from); // the other side has a fresh connection
        }
      } else {
        if (!this.active || !this.peer) return;
        if (from && this.peer.remoteId && from !== this.peer.remoteId) return; // stale
      }
      const peer = this.peer;
      if (from && !peer.remoteId) peer.remoteId = from;
      const pc = peer.pc;
      if (data.type === "offer" || data.type === "answer") {
        const description = { type: data.type, sdp: data.sdp };
        const readyForOffer =
          !peer.makingOffer && (pc.signalingState === "stable" || peer.settingAnswer);
        const collision = description.type === "offer" && !readyForOffer;
        peer.ignoreOffer = !this.polite && collision;
        if (peer.ignoreOffer) return;
        this.lastSignalAt = Date.now();
        peer.settingAnswer = description.type === "answer";
        try {
          await pc.setRemoteDescription(description);
        } finally {
          peer.settingAnswer = false;
        }
        if (description.type === "offer" && this.peer === peer) {
          await pc.setLocalDescription();
          this._signal(peer, { type: pc.localDescription.type, sdp: pc.localDescription.sdp });
        }
      } else if (data.type === "candidate") {
        this.lastSignalAt = Date.now();
        try {
          await pc.addIceCandidate(data.candidate || undefined);
        } catch (err) {
          if (!peer.ignoreOffer) console.warn("call: bad candidate", err);
        }
      }
    });
  }

  /** Whether the other member is connected to the room (welcome.peers, presence events). */
  setPeerOnline(online, { joinedNow = false } = {}) {
    const was = this.peerOnline;
    this.peerOnline = online;
    if (!online) {
      if (this.rejoinTimer) clearTimeout(this.rejoinTimer);
      this.rejoinTimer = null;
    }
    if (online && joinedNow && this.active) {
      const connected = this.peer && this.peer.pc.connectionState === "connected";
      if (!connected) {
        // A reloaded page that was in the call offers by itself: give it a moment first.
        if (this.rejoinTimer) clearTimeout(this.rejoinTimer);
        const since = Date.now();
        this.rejoinTimer = setTimeout(() => {
          this.rejoinTimer = null;
          if (!this.active || !this.peerOnline || this.lastSignalAt >= since) return;
          if (this.peer && this.peer.pc.connectionState === "connected") return;
          this._renegotiate();
        }, REJOIN_WAIT_MS);
      }
    }
    if (was !== online) this._changed();
  }

  /** Our own socket is back (a reconnect, not a reload). */
  onReconnected() {
    if (!this.active || !this.peerOnline) return;
    const connected = this.peer && this.peer.pc.connectionState === "connected";
    if (!connected) this.setPeerOnline(true, { joinedNow: true });
  }

  /** For tests and diagnostics: inbound video statistics. */
  async stats() {
    const peer = this.peer;
    if (!peer) return { connectionState: "none", framesDecoded: 0, framesReceived: 0 };
    const report = await peer.pc.getStats();
    let framesDecoded = 0;
    let framesReceived = 0;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        framesDecoded += s.framesDecoded || 0;
        framesReceived += s.framesReceived || 0;
      }
    });
    return { connectionState: peer.pc.connectionState, framesDecoded, framesReceived };
  }
}

function mediaErrorText(err, gotMicrophone) {
  const name = err && err.name;
  const rest = gotMicrophone
    ? "You joined the call with your microphone only."
    : "You can still see and hear the other member, chat and write notes.";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return `Camera access was refused. ${rest} To use your camera, allow it in the browser's site settings and start the call again.`;
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return `No camera was found. ${rest}`;
  }
  if (name === "NotReadableError" || name === "AbortError") {
    return `The camera is in use by another application. ${rest}`;
  }
  return `The camera could not be started. ${rest}`;
}
