// mwl-broker console: confirmations for destructive buttons, optional auto-refresh. No build step.
document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  }
  const box = document.querySelector("input[data-autorefresh]");
  if (box) {
    const key = "mwl-autorefresh:" + location.pathname;
    box.checked = sessionStorage.getItem(key) === "1";
    box.addEventListener("change", () => sessionStorage.setItem(key, box.checked ? "1" : "0"));
    setInterval(() => { if (box.checked) location.reload(); }, 10000);
  }
});
