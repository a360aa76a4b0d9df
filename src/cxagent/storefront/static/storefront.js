/* Lumen & Quill demo shop: events, bandit slots, recommendation carousels, the Creative
   Concierge widget and the checkout assistant. Vanilla JS, no dependencies. */
(() => {
  "use strict";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const store = window.sessionStorage;
  const body = document.body;
  const catalog = JSON.parse(($("#catalog-data") || { textContent: "{}" }).textContent);
  const page = {
    type: body.dataset.pageType || "home",
    product: body.dataset.productId || null,
    category: body.dataset.category || null,
  };

  const rand = () =>
    window.crypto && crypto.randomUUID
      ? crypto.randomUUID().replace(/-/g, "").slice(0, 24)
      : Math.random().toString(36).slice(2) + Date.now().toString(36);
  const sid = store.getItem("lq.sid") || `web-${rand()}`;
  store.setItem("lq.sid", sid);
  const coarse = window.matchMedia("(pointer: coarse)").matches;
  const device = coarse ? (window.innerWidth < 768 ? "mobile" : "tablet") : "desktop";
  const money = (v) => (v === 0 ? "free" : `$${v.toFixed(2).replace(/\.00$/, "")}`);
  const getJSON = (key, dflt) => {
    try { return JSON.parse(store.getItem(key)) ?? dflt; } catch { return dflt; }
  };
  const setJSON = (key, value) => store.setItem(key, JSON.stringify(value));
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  };

  /* ---- events ------------------------------------------------------------------------ */
  function firstTouch() {
    if (store.getItem("lq.started")) return {};
    store.setItem("lq.started", "1");
    const out = {};
    const params = new URLSearchParams(window.location.search);
    for (const k of ["utm_source", "utm_medium", "utm_campaign"]) {
      if (params.get(k)) out[k] = params.get(k).slice(0, 64);
    }
    if (document.referrer && !document.referrer.startsWith(window.location.origin)) {
      out.referrer = document.referrer.slice(0, 256);
    }
    return out;
  }
  function send(kind, extra = {}) {
    const event = {
      event_id: `ev-${rand()}`,
      session_id: sid,
      kind,
      ts: new Date().toISOString(),
      device,
      ...firstTouch(),
      ...extra,
    };
    for (const k of Object.keys(event)) if (event[k] === null || event[k] === undefined) delete event[k];
    return fetch("/v1/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(event),
      keepalive: true,
    }).catch(() => null);
  }
  const post = (url, data) =>
    fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data),
    }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
  const get = (url) => fetch(url).then((r) => (r.ok ? r.json() : null)).catch(() => null);

  /* the decision a cart add or purchase answers: the last hero/CTA clicked, else the CTA
     last shown (its impression reported) */
  const attributed = () => store.getItem("lq.clicked") || store.getItem("lq.cta") || undefined;

  /* ---- cart -------------------------------------------------------------------------- */
  const cart = () => getJSON("lq.cart", []);
  function updateCartCount() {
    $$("[data-cart-count]").forEach((n) => { n.textContent = String(cart().length); });
  }
  function addToCart(id, viaRec = false) {
    const item = catalog[id];
    if (!item) return;
    const items = cart();
    if (!items.includes(id)) items.push(id);
    setJSON("lq.cart", items);
    updateCartCount();
    if (viaRec) send("rec_click", { product_id: id, category: item.category });
    send("add_to_cart", { product_id: id, category: item.category, decision_id: attributed() });
    renderCart();
    refreshAssistant();
  }
  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-add-to-cart]");
    if (!button) return;
    addToCart(button.dataset.addToCart, button.hasAttribute("data-via-rec"));
    button.textContent = "Added \u2713";
  });

  /* ---- bandit slots (hero, CTA) ------------------------------------------------------ */
  /* calls back once, when the node is at least half in the viewport (or, taller than half
     the viewport, fills half of it) while the page is visible */
  function onceInView(node, callback) {
    if (!("IntersectionObserver" in window)) return callback(); /* no observer: served = shown */
    let done = false;
    let inView = false;
    const fire = () => {
      if (done || !inView || document.visibilityState !== "visible") return;
      done = true;
      observer.disconnect();
      document.removeEventListener("visibilitychange", fire);
      callback();
    };
    const observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const r = e.intersectionRect;
        const vp = e.rootBounds ? e.rootBounds.width * e.rootBounds.height : Infinity;
        inView = e.isIntersecting && r.width * r.height > 0 &&
          (e.intersectionRatio >= 0.499 || r.width * r.height >= 0.5 * vp);
      }
      fire();
    }, { threshold: [0, 0.25, 0.5, 0.75, 1] });
    observer.observe(node);
    document.addEventListener("visibilitychange", fire);
  }
  const reported = new Set();
  function shown(slot, d) {
    if (slot === "cta") store.setItem("lq.cta", d.decision_id);
    if (d.report_impression === false || reported.has(d.decision_id)) return;
    reported.add(d.decision_id);
    send("impression", { decision_id: d.decision_id });
  }
  async function fillSlot(slot) {
    const node = $(`[data-slot="${slot}"]`);
    if (!node) return;
    const d = await post("/v1/decide", { session_id: sid, slot, device });
    node.removeAttribute("data-pending");
    if (!d) return; /* the service is down: the default stays, with no decision to credit */
    const link = $("[data-slot-link]", node);
    node.dataset.decisionId = d.decision_id;
    node.dataset.arm = d.arm;
    if (slot === "hero") {
      node.className = `hero theme-${d.content.theme}`;
      $("[data-hero-headline]", node).textContent = d.content.headline;
      $("[data-hero-subline]", node).textContent = d.content.subline;
      link.textContent = d.content.button;
    } else {
      link.textContent = d.content.text;
    }
    link.setAttribute("href", d.content.href);
    link.addEventListener("click", () => {
      store.setItem("lq.clicked", d.decision_id);
      send(slot === "hero" ? "hero_click" : "cta_click", { decision_id: d.decision_id });
    });
    /* the impression: rendered and in view (the service counts nothing before it) */
    if (d.report_impression === false) shown(slot, d);
    else onceInView(node, () => shown(slot, d));
  }

  /* ---- carousels ----------------------------------------------------------------------- */
  function recCard(item, cls = "rec-card") {
    const card = el("a", { class: cls, href: item.url, "data-rec-id": item.id });
    card.append(
      el("span", { class: `rec-swatch swatch-${item.category.split("-")[0]}`, "aria-hidden": "true" }),
      el("strong", { class: "rec-name" }, item.name),
      el("span", { class: "rec-callout" }, item.callout || item.description),
      el("span", { class: "price" }, money(item.price)),
    );
    card.addEventListener("click", () => send("rec_click", { product_id: item.id, category: item.category }));
    return card;
  }
  function wireCarousel(section, track) {
    const step = (dir) => track.scrollBy({ left: dir * track.clientWidth * 0.8, behavior: "smooth" });
    const prev = $("[data-carousel-prev]", section);
    const next = $("[data-carousel-next]", section);
    if (prev) prev.addEventListener("click", () => step(-1));
    if (next) next.addEventListener("click", () => step(1));
  }
  function recsUrl(extra = {}) {
    const params = new URLSearchParams({ session_id: sid });
    if (page.product) params.set("current", page.product);
    params.set("cart", cart().join(",")); /* the page's cart wins over the session's (fresher) */
    for (const [k, v] of Object.entries(extra)) if (v) params.set(k, v);
    return `/v1/recommendations?${params}`;
  }
  async function fillCarousel() {
    const section = $("[data-carousel]");
    if (!section) return;
    const recs = await get(recsUrl());
    if (!recs || !recs.items.length) return;
    const track = $("[data-carousel-track]", section);
    track.replaceChildren(...recs.items.map((item) => recCard(item)));
    $("[data-recs-persona]", section).textContent = `· for a ${recs.persona}`;
    section.hidden = false;
    wireCarousel(section, track);
  }

  /* ---- the Creative Concierge ------------------------------------------------------------ */
  const modal = $("[data-concierge]");
  let interactions = 0;
  let filters = { max_price: "", category: "" };
  function interact(extra) {
    interactions += 1;
    send("widget_option", extra);
    if (interactions >= 2) {
      $("[data-advanced]", modal).hidden = false;
      $("[data-advanced-hint]", modal).hidden = true;
    }
  }
  function optionCard(role, label, item, actionText) {
    const card = el("article", { class: "option-card", tabindex: "0", "data-role": role, "data-item-id": item.id });
    const actions = el("div", { class: "card-actions", hidden: "" });
    const view = el("a", { class: "btn btn-small", href: item.url }, actionText);
    view.addEventListener("click", () => send("rec_click", { product_id: item.id, category: item.category }));
    actions.append(view);
    if (role !== "learn") {
      actions.append(el("button", { type: "button", class: "btn btn-small btn-ghost", "data-add-to-cart": item.id, "data-via-rec": "" }, "Add to cart"));
    }
    card.append(
      el("span", { class: "badge" }, label),
      el("h3", {}, item.name),
      el("p", { class: "callout" }, item.callout || item.description),
      el("p", { class: "price" }, role === "learn" ? "Free tutorial" : money(item.price)),
      actions,
    );
    const choose = (e) => {
      if (e.target.closest("a, button")) return;
      if (card.classList.contains("selected")) return;
      $$(".option-card", modal).forEach((c) => {
        c.classList.remove("selected");
        $(".card-actions", c).hidden = true;
      });
      card.classList.add("selected");
      actions.hidden = false;
      interact({ product_id: item.id, category: item.category });
    };
    card.addEventListener("click", choose);
    card.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(e); } });
    return card;
  }
  async function fillConcierge() {
    const recs = await get(recsUrl({ k: "8", ...filters }));
    if (!recs || recs.items.length < 2) return false;
    const cards = [
      optionCard("primary", "Top pick", recs.items[0], "View"),
      optionCard("alternative", "Alternative", recs.items[1], "View"),
    ];
    if (recs.tutorial) {
      const t = recs.tutorial;
      cards.push(optionCard("learn", "Learn more", { ...t, callout: t.description }, "Open tutorial"));
    }
    $("[data-option-cards]", modal).replaceChildren(...cards);
    const interest = recs.interest ? `, ${recs.interest.replace("_first", "")} first` : "";
    $("[data-concierge-persona]", modal).textContent = `Picked for a ${recs.persona}${interest}: choose one to see more.`;
    $("[data-concierge-track]", modal).replaceChildren(...recs.items.slice(2).map((i) => recCard(i)));
    return true;
  }
  let lastFocus = null;
  async function openConcierge() {
    if (!modal || !modal.hidden) return;
    lastFocus = document.activeElement;
    store.setItem("lq.concierge", "shown");
    if (!(await fillConcierge())) return;
    modal.hidden = false;
    body.classList.add("modal-open");
    $(".concierge-panel", modal).focus();
    send("widget_open", { page_type: page.type });
  }
  function closeConcierge() {
    if (!modal || modal.hidden) return;
    modal.hidden = true;
    body.classList.remove("modal-open");
    send("widget_dismiss");
    if (lastFocus) lastFocus.focus();
  }
  if (modal) {
    $$("[data-concierge-close]", modal).forEach((n) => n.addEventListener("click", closeConcierge));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeConcierge(); });
    $$("[data-budget]", modal).forEach((chip) =>
      chip.addEventListener("click", async () => {
        $$("[data-budget]", modal).forEach((c) => c.classList.toggle("chip-on", c === chip));
        filters.max_price = chip.dataset.budget;
        interact({});
        await fillConcierge();
      }),
    );
    $("[data-focus]", modal).addEventListener("change", async (e) => {
      filters.category = e.target.value;
      interact(e.target.value ? { category: e.target.value } : {});
      await fillConcierge();
    });
    const launch = $("[data-concierge-launch]");
    if (launch) launch.addEventListener("click", () => openConcierge());
  }

  /* ---- cart, checkout and the checkout assistant -------------------------------------- */
  function renderCart() {
    const list = $("[data-cart-lines]");
    if (!list) return;
    const items = cart().filter((id) => catalog[id]);
    const readonly = list.hasAttribute("data-readonly");
    list.replaceChildren(
      ...items.map((id) => {
        const line = el("li", { class: "cart-line" });
        line.append(el("a", { href: catalog[id].url }, catalog[id].name), el("span", { class: "price" }, money(catalog[id].price)));
        if (!readonly) {
          const remove = el("button", { type: "button", class: "link-btn", "data-remove-from-cart": id, "aria-label": `Remove ${catalog[id].name}` }, "Remove");
          remove.addEventListener("click", () => {
            setJSON("lq.cart", cart().filter((x) => x !== id));
            send("remove_from_cart", { product_id: id, category: catalog[id].category });
            updateCartCount();
            renderCart();
            refreshAssistant();
          });
          line.append(remove);
        }
        return line;
      }),
    );
    $("[data-cart-empty]").hidden = items.length > 0;
    $("[data-cart-total]").textContent = money(items.reduce((s, id) => s + catalog[id].price, 0));
  }
  async function refreshAssistant() {
    const aside = $("[data-assistant]");
    if (!aside) return;
    const list = $("[data-addons]", aside);
    if (!cart().length) {
      list.replaceChildren();
      return;
    }
    const recs = await get(recsUrl({ k: "3" }));
    if (!recs) return;
    const names = cart().filter((id) => catalog[id]).map((id) => catalog[id].name);
    $("[data-assistant-intro]", aside).textContent = `Creatives who buy ${names[0]} often add:`;
    list.replaceChildren(
      ...recs.addons.map((item) => {
        const li = el("li", { class: "addon" });
        li.append(
          el("strong", {}, item.name),
          el("span", { class: "rec-callout" }, item.callout),
          el("button", { type: "button", class: "btn btn-small", "data-add-to-cart": item.id, "data-via-rec": "" }, `Add · ${money(item.price)}`),
        );
        return li;
      }),
    );
  }
  const place = $("[data-place-order]");
  if (place) {
    place.addEventListener("click", () => {
      const items = cart().filter((id) => catalog[id]);
      if (!items.length) return;
      const value = Math.round(items.reduce((s, id) => s + catalog[id].price, 0) * 100) / 100;
      send("purchase", { value, decision_id: attributed() });
      setJSON("lq.cart", []);
      updateCartCount();
      renderCart();
      refreshAssistant();
      $("[data-thanks]").hidden = false;
      place.disabled = true;
    });
  }

  /* ---- this page ------------------------------------------------------------------------ */
  async function start() {
    updateCartCount();
    renderCart();
    const pages = Number(store.getItem("lq.pages") || "0") + 1;
    store.setItem("lq.pages", String(pages));
    await send("page_view", { page_type: page.type, product_id: page.product, category: page.category });
    await Promise.all([fillSlot("hero"), fillSlot("cta"), fillCarousel(), refreshAssistant()]);
    const params = new URLSearchParams(window.location.search);
    const entry = pages === 1 && (params.get("concierge") === "open" || params.has("utm_campaign"));
    if (!store.getItem("lq.concierge") && (entry || pages >= 3)) await openConcierge();
    body.dataset.ready = "1";
  }
  start();
})();
