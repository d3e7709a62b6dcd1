"""The Annotate tab's keyboard: the shortcuts its help line lists, and the script (loaded once for
the page through `launch(head=...)`) that maps keys to its buttons while the tab is visible."""

SHORTCUTS = [("j / →", "next session"), ("k / ←", "previous session"), ("1–6", "pick a label"),
             ("c", "comment"), ("s", "save"), ("Enter", "save and next (outside text fields)"),
             ("?", "show or hide this help")]

SHORTCUTS_JS = """
<script>
(() => {
  const visible = (id) => { const el = document.getElementById(id); return el && el.offsetParent !== null; };
  const click = (id) => { const el = document.querySelector('#' + id); if (el) el.click(); };
  document.addEventListener('keydown', (e) => {
    if (!visible('annot-root') || e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target, tag = (t && t.tagName || '').toLowerCase();
    if (tag === 'textarea' || (tag === 'input' && !['radio', 'checkbox'].includes(t.type))) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    const k = e.key;
    // arrows on a focused radio or checkbox move within its group, as the browser does
    if (tag === 'input' && k.startsWith('Arrow')) return;
    if (k === 'j' || k === 'ArrowRight') click('annot-next');
    else if (k === 'k' || k === 'ArrowLeft') click('annot-prev');
    else if (k >= '1' && k <= '6') {
      const radios = document.querySelectorAll('#annot-label input[type=radio]');
      if (radios[+k - 1]) radios[+k - 1].click();
    } else if (k === 'c') { const c = document.querySelector('#annot-comment textarea'); if (c) c.focus(); }
    else if (k === 's') click('annot-save');
    else if (k === 'Enter') click('annot-save-next');
    else if (k === '?') { const h = document.getElementById('annot-help'); if (h) h.classList.toggle('annot-hidden'); }
    else return;
    e.preventDefault();
  });
  // a form with unsaved values asks before the page goes away
  window.addEventListener('beforeunload', (e) => {
    const d = document.getElementById('annot-dirty');
    if (d && d.textContent.includes('unsaved changes')) { e.preventDefault(); e.returnValue = ''; }
  });
})();
</script>
<style>.annot-hidden {display: none !important}</style>
"""
